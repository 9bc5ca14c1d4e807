"""Grounding DINO + SAM2-video path on tiny random models (METHOD.md §3): shapes and plumbing only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from dreamrelation.data.manifest import ClipRecord, Manifest
from dreamrelation.data.masks import MASKS_STORE, MaskConfig, NotEnoughSubjects
from dreamrelation.data.own_folder_demo import export_own_folder_demo
from dreamrelation.data.relations import Relation
from dreamrelation.data.select import SelectConfig, select_clips
from dreamrelation.data.video import VideoConfig, probe_video
from dreamrelation.perception import segment
from dreamrelation.stages.masks import make_masks

RELATION = "A112"
VIDEO = VideoConfig(num_frames=7, height=48, width=80, fps=30.0, aspect=80 / 48)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    cache = tmp_path_factory.mktemp("mask-models")
    detector_dir, segmenter_dir = segment.resolve_mask_models(None, None, cache)
    return detector_dir, segmenter_dir


@pytest.fixture(scope="module")
def loaded(tiny_models):
    return segment.load_detector(tiny_models[0]), segment.load_segmenter(tiny_models[1])


def _frames(n: int = 9, height: int = 48, width: int = 80) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (n, height, width, 3), dtype=np.uint8)


def test_tiny_models_are_saved_and_reloaded_from_folders(tiny_models, loaded):
    detector_dir, segmenter_dir = tiny_models
    assert (detector_dir / "config.json").is_file() and (segmenter_dir / "config.json").is_file()
    detector, segmenter = loaded
    assert type(detector.model).__name__ == "GroundingDinoForObjectDetection"
    assert type(segmenter.model).__name__ == "Sam2VideoModel" and segmenter.image_size == 64
    ids = detector.processor.tokenizer("person.")["input_ids"]
    assert detector.processor.tokenizer.unk_token_id not in ids  # the vocab was really loaded
    # building again reuses the folder
    assert segment.build_tiny_detector(detector_dir) == detector_dir
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        segment.load_detector(detector_dir.parent / "missing")


def test_nms_and_box_iou():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=float)
    iou = segment.box_iou(boxes, boxes)
    np.testing.assert_allclose(np.diag(iou), 1.0)
    assert iou[0, 1] == pytest.approx(81 / 100) and iou[0, 2] == 0.0
    assert segment.nms(boxes, np.array([0.5, 0.9, 0.1])).tolist() == [1, 2]


def test_detection_gives_two_boxes_or_says_why(loaded):
    detector, _ = loaded
    frames = _frames()
    boxes, scores = segment.detect(detector, frames[0], "person", 0.0, 0.0)
    assert boxes.ndim == 2 and boxes.shape[1] == 4 and len(scores) == len(boxes)
    assert (np.diff(scores) <= 0).all()
    assert (boxes[:, [0, 2]] <= 80 + 1e-3).all() and (boxes[:, [1, 3]] <= 48 + 1e-3).all()
    frame_idx, two = segment.find_two_people(detector, frames, "person", 0.0, 0.0)
    assert frame_idx == 0 and two.shape == (2, 4)
    with pytest.raises(NotEnoughSubjects, match="at most 0"):
        segment.find_two_people(detector, frames, "person", 1.01, 0.0, stride=4, max_tries=3)


def test_propagation_covers_every_frame_both_ways(loaded, monkeypatch):
    _, segmenter = loaded
    visited: list[tuple[int, bool]] = []
    original = segmenter.model.propagate_in_video_iterator

    def spy(session, start_frame_idx=None, reverse=False, **kwargs):
        for output in original(session, start_frame_idx=start_frame_idx, reverse=reverse, **kwargs):
            visited.append((output.frame_idx, reverse))
            assert output.object_ids == [1, 2]
            yield output

    monkeypatch.setattr(segmenter.model, "propagate_in_video_iterator", spy)
    boxes = np.array([[5.0, 5.0, 30.0, 45.0], [45.0, 4.0, 75.0, 44.0]])
    masks = segment.propagate_boxes(segmenter, _frames(), 3, boxes, mask_threshold=-1e4)
    assert masks.shape == (9, 2, 48, 80) and masks.dtype == bool
    assert masks.all()  # threshold below every logit: each frame was written
    assert {f for f, r in visited if not r} == set(range(3, 9))
    assert {f for f, r in visited if r} == set(range(0, 4))


def _one_clip_manifest(root: Path) -> Manifest:
    stamp = json.loads((root / "synthetic_dataset.json").read_text())
    name = next(name for name, fault in stamp["clips"] if fault is None and name.endswith(RELATION))
    video = next((root / "nturgb+d_rgb").glob(f"{name}_rgb.*"))
    info = probe_video(video)
    clip = ClipRecord(
        clip_id=name, relation="A112", video=str(video),
        skeleton=str(root / "nturgb+d_skeletons" / f"{name}.skeleton"),
        frames=info.frames, fps=info.fps, width=info.width, height=info.height,
    )
    return Manifest(relation="A112", relation_name="high-five", dataset_root=str(root), clips=[clip])


@pytest.mark.parametrize("backend", ["grounded-sam2", "skeleton-sam2"])
def test_neural_backends_run_the_stage_end_to_end(tmp_path, synthetic_root, tiny_models, backend):
    config = MaskConfig(
        backend=backend, detector_dir=str(tiny_models[0]), segmenter_dir=str(tiny_models[1]),
        box_threshold=0.0, text_threshold=0.0, mask_threshold=-1e4,  # random models: keep every pixel
    )
    summary = make_masks(_one_clip_manifest(Path(synthetic_root)), str(tmp_path), VIDEO, config)
    assert summary["ok"] == 1, summary["reasons"]
    group = zarr.open_group(str(tmp_path / MASKS_STORE), mode="r")
    record = group.attrs["clips"][0]
    assert record["prompt_frame"] is not None and len(record["subject_ids"]) == 2
    assert group["latent"].shape == (1, 2, 3, 6, 10) and group["pixel"].shape == (1, 7, 2, 48, 10)
    assert (tmp_path / record["preview"]).is_file()


def test_grounded_sam2_masks_a_folder_clip_that_has_no_skeleton(tmp_path, tiny_models):
    """Issue 12: the detector + SAM2 backend needs only the video, so it works on own-folder clips."""
    videos = export_own_folder_demo(tmp_path / "own")
    select = SelectConfig(source="folder", dataset_root=str(videos), clips_per_relation=1)
    manifest = select_clips(Relation("push_away", "Push Away", ""), select, VIDEO)
    assert manifest.clips[0].skeleton is None
    config = MaskConfig(
        backend="grounded-sam2", detector_dir=str(tiny_models[0]), segmenter_dir=str(tiny_models[1]),
        box_threshold=0.0, text_threshold=0.0, mask_threshold=-1e4,
    )
    summary = make_masks(manifest, str(tmp_path / "masks"), VIDEO, config)
    assert summary["ok"] == 1, summary["reasons"]
    skeleton_config = MaskConfig(backend="skeleton-box")
    failed = make_masks(manifest, str(tmp_path / "masks-skeleton"), VIDEO, skeleton_config)
    assert failed["failed"] == 1 and "has no .skeleton file" in next(iter(failed["reasons"].values()))
