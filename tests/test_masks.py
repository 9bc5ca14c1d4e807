"""Subject masks (METHOD.md §3): latent alignment, reductions, order, boxes, storage, the stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from dreamrelation.data.manifest import ClipRecord, Manifest
from dreamrelation.data.masks import (
    MASKS_STORE,
    MaskConfig,
    NotEnoughSubjects,
    frame_number,
    latent_coverage,
    latent_grid,
    latent_masks,
    latent_shape,
    mask_iou,
    order_subjects,
    pack_masks,
    preprocess_masks,
    preview_image,
    rasterize_boxes,
    read_pixel_masks,
    relation_mask,
    skeleton_boxes,
    sort_frame_files,
    subject_order,
    temporal_average,
    transform_boxes,
    unpack_masks,
)
from dreamrelation.data.video import VideoConfig, preprocess_frames, probe_video
from dreamrelation.stages.masks import make_masks

DEMO = VideoConfig(num_frames=25, height=96, width=160, fps=30.0, aspect=160 / 96)


# -- time alignment ------------------------------------------------------------------------------
def test_temporal_average_hand_computed_13_frames():
    x = np.arange(13, dtype=float)  # pixel frame t holds the value t
    # latent 0 <- frame 0; latent 1 <- frames 1..6; latent 2 <- frames 7..12
    assert temporal_average(x).tolist() == [0.0, 3.5, 9.5]


def test_temporal_average_61_frames_gives_11():
    x = np.arange(61, dtype=float)
    out = temporal_average(x)
    assert out.shape == (11,) and out.dtype == np.float32
    # latent i >= 1 is the mean of 6(i-1)+1 .. 6i = 6i - 2.5
    assert out.tolist() == [0.0] + [6 * i - 2.5 for i in range(1, 11)]


def test_temporal_average_rejects_misaligned_lengths():
    with pytest.raises(ValueError, match="6k\\+1"):
        temporal_average(np.zeros(60))


def test_latent_masks_alignment_of_single_frames():
    masks = np.zeros((61, 2, 16, 16), dtype=bool)
    masks[0, 0] = True  # only pixel frame 0 -> only latent frame 0, fully
    masks[6, 1, :8, :8] = True  # last frame of latent 1 -> 1/6 there, nothing in latent 2
    masks[7, 1, :8, :8] = True  # first frame of latent 2 -> 1/6 there
    out = latent_masks(masks)
    assert out.shape == (11, 3, 2, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0, 0, 0], [1.0] + [0.0] * 10)
    np.testing.assert_allclose(out[:, 1, 0, 0], [0, 1 / 6, 1 / 6] + [0] * 8, rtol=1e-6)
    assert out[:, 1, 1, 1].max() == 0.0


# -- spatial reduction and union -----------------------------------------------------------------
def test_any_coverage_reduction():
    masks = np.zeros((1, 24, 32), dtype=bool)
    masks[0, 9, 17] = True  # one pixel in cell (row 1, col 2)
    masks[0, 16:24, 0:8] = True  # a whole cell (2, 0)
    cells = latent_grid(masks)
    assert cells.shape == (1, 3, 4)
    assert set(zip(*np.nonzero(cells[0]))) == {(1, 2), (2, 0)}
    with pytest.raises(ValueError, match="divisible"):
        latent_grid(np.zeros((1, 20, 32), dtype=bool))


def test_coverage_reduction_is_the_covered_fraction_of_each_cell():
    masks = np.zeros((1, 24, 32), dtype=bool)
    masks[0, 9, 17] = True  # one pixel of 64 in cell (1, 2)
    masks[0, 16:24, 0:8] = True  # the whole cell (2, 0)
    masks[0, 0:4, 24:32] = True  # the top half of cell (0, 3)
    cells = latent_coverage(masks)
    assert cells.shape == (1, 3, 4) and cells.dtype == np.float32
    expected = np.zeros((3, 4), dtype=np.float32)
    expected[1, 2], expected[2, 0], expected[0, 3] = 1 / 64, 1.0, 0.5
    np.testing.assert_allclose(cells[0], expected, rtol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        latent_coverage(np.zeros((1, 24, 30), dtype=bool))


def test_relation_is_union_per_frame_before_averaging():
    masks = np.zeros((7, 2, 8, 8), dtype=bool)
    masks[1:4, 0] = True  # S1 in frames 1-3 of latent frame 1
    masks[4:7, 1] = True  # S2 in frames 4-6
    out = latent_masks(masks)
    np.testing.assert_allclose(out[1, :, 0, 0], [0.5, 0.5, 1.0])  # not max(0.5, 0.5)
    assert out.min() >= 0.0 and out.max() <= 1.0
    a, b = np.array([0.0, 0.3, 1.0]), np.array([0.5, 0.2, 1.0])
    np.testing.assert_array_equal(relation_mask(a, b), [0.5, 0.3, 1.0])


# -- subject order -------------------------------------------------------------------------------
def _blob(height: int, width: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((height, width), dtype=bool)
    m[2:6, x0:x1] = True
    return m


def test_subject_order_left_most_in_first_frame_with_both():
    masks = np.zeros((3, 2, 8, 20), dtype=bool)
    masks[0, 0] = _blob(8, 20, 15, 19)  # frame 0: only subject 0 (on the right)
    masks[1, 0], masks[1, 1] = _blob(8, 20, 12, 16), _blob(8, 20, 2, 5)  # frame 1: subject 1 is left
    masks[2, 0], masks[2, 1] = _blob(8, 20, 1, 4), _blob(8, 20, 10, 14)  # later they cross: order stays
    assert subject_order(masks) == [1, 0]
    ordered, ids = order_subjects(masks, [111, 222])
    assert ids == [222, 111]
    np.testing.assert_array_equal(ordered[:, 0], masks[:, 1])  # the whole clip is permuted
    np.testing.assert_array_equal(ordered[:, 1], masks[:, 0])


def test_subject_order_needs_a_frame_with_both():
    masks = np.zeros((2, 2, 8, 8), dtype=bool)
    masks[0, 0, 1, 1] = masks[1, 1, 2, 2] = True
    with pytest.raises(NotEnoughSubjects, match="both subjects"):
        subject_order(masks)


# -- skeleton boxes ------------------------------------------------------------------------------
def test_skeleton_boxes_use_tracked_joints_pad_and_clip():
    xy = np.full((3, 25, 2), np.nan)
    tracked = np.zeros((3, 25), dtype=bool)
    xy[0, :3] = [[100, 200], [140, 260], [120, 300]]  # frame 0: 3 tracked joints
    xy[0, 3] = [900, 900]  # an untracked joint far away is ignored
    tracked[0, :3] = True
    xy[1, :3] = [[5, 10], [45, 110], [20, 60]]  # frame 1: padding runs off the frame edge
    tracked[1, :3] = True
    xy[2, :2] = [[50, 50], [60, 60]]  # frame 2: too few tracked joints
    tracked[2, :2] = True
    boxes = skeleton_boxes(xy, tracked, height=1080, width=1920, padding=0.1, min_joints=3)
    np.testing.assert_allclose(boxes[0], [96, 190, 144, 310])  # 40x100 box + 10% per side
    np.testing.assert_allclose(boxes[1], [1, 0, 49, 120])  # y0 = 10 - 10 clipped to 0
    assert np.isnan(boxes[2]).all()


def test_transform_boxes_follow_the_video_crop_and_resize():
    video = VideoConfig()  # 1920x1080 -> centre crop 1908x1080 (left 6) -> 848x480
    boxes = np.array([[6.0, 0.0, 1914.0, 1080.0], [960.0, 540.0, 1005.0, 585.0], [0.0, 0.0, 5.0, 10.0]])
    out = transform_boxes(boxes, 1080, 1920, video)
    np.testing.assert_allclose(out[0], [0, 0, 848, 480])
    np.testing.assert_allclose(out[1], [(954) * 848 / 1908, 240, (999) * 848 / 1908, 260])
    assert np.isnan(out[2]).all()  # entirely inside the cropped-away margin


def test_rasterize_boxes_pixel_centres():
    boxes = np.array([[[1.4, 0.6, 3.6, 2.0], [np.nan] * 4]])
    masks = rasterize_boxes(boxes, 4, 6)
    assert masks.shape == (1, 2, 4, 6)
    # columns whose centre j + 0.5 lies in [1.4, 3.6): 1, 2, 3; rows: 0.5 < 0.6 -> only row 1
    assert set(zip(*np.nonzero(masks[0, 0]))) == {(1, 1), (1, 2), (1, 3)}
    assert not masks[0, 1].any()


# -- geometry, storage, frame files, preview -----------------------------------------------------
def test_preprocess_masks_is_the_video_preprocessing():
    rng = np.random.default_rng(0)
    masks = rng.random((40, 2, 90, 200)) > 0.7
    out = preprocess_masks(masks, 25.0, DEMO)  # 25 fps source: resampling repeats frames
    assert out.shape == (25, 2, 96, 160) and out.dtype == bool
    for k in range(2):
        expected = preprocess_frames(
            masks[:, k].astype(np.uint8), 25.0, 25, 96, 160, 30.0, DEMO.aspect, nearest=True
        ).astype(bool)
        np.testing.assert_array_equal(out[:, k], expected)


def test_bit_packing_round_trip_and_bit_order():
    rng = np.random.default_rng(1)
    masks = rng.random((3, 2, 5, 13)) > 0.5  # width not a multiple of 8
    packed = pack_masks(masks)
    assert packed.shape == (3, 2, 5, 2) and packed.dtype == np.uint8
    np.testing.assert_array_equal(unpack_masks(packed, 13), masks)
    row = np.zeros(13, dtype=bool)
    row[0] = True  # the first pixel is the most significant bit of byte 0
    assert pack_masks(row).tolist() == [128, 0]


def test_frames_sort_numerically():
    names = ["frame10.png", "frame2.png", "frame1.png", "frame100.png"]
    assert sort_frame_files(names) == ["frame1.png", "frame2.png", "frame10.png", "frame100.png"]
    assert sorted(names)[1] == "frame10.png"  # what string sorting would have done
    assert frame_number(Path("/clips/S001_00042.jpg")) == 42
    with pytest.raises(ValueError, match="no number"):
        frame_number("cover.png")


def test_preview_overlays_two_colours():
    frames = np.zeros((9, 32, 48, 3), dtype=np.uint8)
    masks = np.zeros((9, 2, 32, 48), dtype=bool)
    masks[:, 0, :, :24] = True
    masks[:, 1, :, 24:] = True
    image = preview_image(frames, masks, count=3, frame_width=24)
    assert image.shape == (16, 72, 3) and image.dtype == np.uint8
    left, right = image[8, 4].astype(int), image[8, 20].astype(int)
    assert left[0] > left[2] and right[2] > right[0]  # S1 reddish, S2 bluish


# -- the stage on the synthetic dataset ----------------------------------------------------------
def _manifest(root: Path, relation: str) -> Manifest:
    clips = []
    for video_path in sorted((root / "nturgb+d_rgb").glob(f"*{relation}_rgb.*")):
        name = video_path.name[:20]
        info = probe_video(video_path)
        clips.append(
            ClipRecord(
                clip_id=name, relation=relation, video=str(video_path),
                skeleton=str(root / "nturgb+d_skeletons" / f"{name}.skeleton"),
                frames=info.frames, fps=info.fps, width=info.width, height=info.height,
            )
        )
    return Manifest(relation=relation, relation_name=relation, dataset_root=str(root), clips=clips)


def _gt_boxes(masks: np.ndarray) -> np.ndarray:
    """Bounding box of every (frame, subject) ground-truth mask, (T, K, 4)."""
    out = np.full((*masks.shape[:2], 4), np.nan)
    for t, k in np.ndindex(*masks.shape[:2]):
        ys, xs = np.nonzero(masks[t, k])
        if len(xs):
            out[t, k] = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    return out


@pytest.mark.parametrize("relation", ["A058", "A055"])
def test_skeleton_box_stage_matches_ground_truth(tmp_path, synthetic_root, relation):
    manifest = _manifest(Path(synthetic_root), relation)
    summary = make_masks(manifest, str(tmp_path), DEMO, MaskConfig(backend="skeleton-box"), "fp-test")

    # the synthetic faults: single_body -> skipped, missing skeleton and too short -> failed
    assert summary["clips"] == len(manifest.clips) == 8
    assert (summary["ok"], summary["skipped"], summary["failed"]) == (5, 1, 2)
    assert all(summary["reasons"].values())
    group = zarr.open_group(str(tmp_path / MASKS_STORE), mode="r")
    attrs = group.attrs.asdict()
    assert attrs["fingerprint"] == "fp-test" and attrs["backend"] == "skeleton-box"
    assert group["latent"].shape == (8, *((latent_shape(DEMO)[0], 3) + latent_shape(DEMO)[1:]))

    for row, record in enumerate(attrs["clips"]):
        if record["status"] != "ok":
            assert np.isnan(group["latent"][row]).all()
            continue
        gt = np.load(Path(synthetic_root) / "masks" / f"{record['clip_id']}_masks.npz")
        order = [list(gt["body_ids"]).index(i) for i in record["subject_ids"]]
        truth = preprocess_masks(gt["masks"], 30.0, DEMO)[:, order]
        pixel = read_pixel_masks(str(tmp_path), record["clip_id"])
        np.testing.assert_array_equal(group["latent"][row], latent_masks(pixel))
        assert (tmp_path / record["preview"]).stat().st_size > 0
        for k in range(2):
            # the masks training uses (latent grid) overlap the true figures ...
            assert mask_iou(latent_grid(pixel[:, k]), latent_grid(truth[:, k])) >= 0.5
            # ... and the boxes locate them (a box around a stick figure is mostly background,
            # so pixel IoU with the figure itself is ~0.35 by construction)
            assert mask_iou(pixel[:, k], rasterize_boxes(_gt_boxes(truth), 96, 160)[:, k]) >= 0.7
        first = np.flatnonzero(pixel.any(axis=(2, 3)).all(axis=1))[0]
        centres = [np.nonzero(pixel[first, k].any(axis=0))[0].mean() for k in range(2)]  # boxes
        assert centres[0] <= centres[1]  # subject1 is the left one
