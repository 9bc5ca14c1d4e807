"""The make_masks stage (METHOD.md §3): subject masks of every manifest clip, into masks.zarr.

Per clip: read the video (training geometry, `data.video.load_clip`) and, for the skeleton
backends, the `.skeleton` file; find the two subjects with the configured backend
(`grounded-sam2`: Grounding DINO + SAM2, `skeleton-sam2`: skeleton boxes + SAM2, `skeleton-box`:
skeleton boxes rasterised, no network; models from `perception.segment`; `provided`: the user's
own masks of a folder dataset, validated and preprocessed like the video); order them
left-to-right (provided masks keep the user's order); then store packed pixel masks, latent masks (S1, S2, R after T_c averaging) and
a preview PNG. The mask math is `data.masks`; the store layout is in docs/artifacts.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import fsspec
import numpy as np
import zarr
from tqdm.auto import tqdm

from dreamrelation.data.folder import MASKS_DIR, MASKS_NPZ, MaskFileError, read_user_masks
from dreamrelation.data.manifest import ClipRecord, Manifest
from dreamrelation.data.masks import (
    FORMAT_VERSION,
    MASK_CHANNELS,
    MASKS_STORE,
    PREVIEWS_DIR,
    SUBJECTS,
    MaskConfig,
    NotEnoughSubjects,
    latent_masks,
    latent_shape,
    order_subjects,
    pack_masks,
    png_bytes,
    preprocess_masks,
    preview_image,
    skeleton_box_masks,
    skeleton_track_boxes,
)
from dreamrelation.data.skeleton import read_skeleton
from dreamrelation.data.store import fetch_local, zarr_location
from dreamrelation.data.video import VideoConfig, load_clip
from dreamrelation.perception import segment

log = logging.getLogger("dreamrelation.masks")


@dataclass
class ClipMasks:
    """One clip's subject masks in training geometry, subject order applied."""

    pixel: np.ndarray  # (N, 2, H, W) bool
    subject_ids: list[int]  # skeleton body ids, or SAM2 object ids (grounded-sam2: detection rank)
    prompt_frame: int | None  # frame of the SAM2 box prompts (None for skeleton-box)
    frames: np.ndarray  # (N, H, W, 3) uint8, the preprocessed clip (for the preview)


@dataclass
class SegmentationModels:
    """The neural models a backend needs (None where unused)."""

    detector: Any = None
    segmenter: Any = None

    @classmethod
    def load(cls, config: MaskConfig) -> SegmentationModels:
        """Load what `config.backend` needs from local folders (tiny demo models when unset)."""
        if config.backend in ("skeleton-box", "provided"):
            return cls()
        if config.detector_dir is None or config.segmenter_dir is None:
            log.warning("make_masks: detector/segmenter folder unset, using tiny RANDOM demo models")
        detector_dir, segmenter_dir = segment.resolve_mask_models(
            config.detector_dir, config.segmenter_dir, config.models_cache
        )
        device = segment.resolve_device(config.device)
        segmenter = segment.load_segmenter(segmenter_dir, device)
        detector = segment.load_detector(detector_dir, device) if config.backend == "grounded-sam2" else None
        return cls(detector, segmenter)


def clip_masks(clip: ClipRecord, video: VideoConfig, config: MaskConfig, models: SegmentationModels) -> ClipMasks:
    """Subject masks of one manifest clip with the configured backend (METHOD.md §3).

    Raises NotEnoughSubjects when fewer than two subjects are found (the clip is skipped).
    """
    frames = load_clip(
        fetch_local(clip.video), video.num_frames, video.height, video.width, video.fps, video.aspect,
        clip.start_seconds,
    )
    prompt_frame: int | None = None
    if config.backend == "provided":  # the user's order is kept: subject 1 is the one they named first
        masks, ids = provided_masks(clip, video), [1, 2]
    elif config.backend == "grounded-sam2":
        prompt_frame, boxes = segment.find_two_people(
            models.detector, frames, config.text_prompt, config.box_threshold, config.text_threshold,
            config.detector_stride, config.detector_max_tries,
        )
        masks = segment.propagate_boxes(models.segmenter, frames, prompt_frame, boxes, config.mask_threshold)
        ids = [1, 2]
    else:
        if clip.skeleton is None:
            raise ValueError(f"clip {clip.clip_id} has no .skeleton file for masks.backend={config.backend}")
        skeleton = read_skeleton(fetch_local(clip.skeleton))
        boxes, ids = skeleton_track_boxes(
            skeleton, clip.fps, clip.height, clip.width, video, config.box_padding, config.min_tracked_joints
        )
        if config.backend == "skeleton-box":
            masks = skeleton_box_masks(boxes, video)
        else:
            prompt_frame = segment.first_frame_with_boxes(boxes)
            masks = segment.propagate_boxes(models.segmenter, frames, prompt_frame, boxes[prompt_frame], config.mask_threshold)
    if config.backend != "provided":
        masks, ids = order_subjects(masks, ids)
    presence = masks.any(axis=(2, 3)).mean(axis=0)
    for k, fraction in enumerate(presence):
        if fraction < config.min_presence:
            raise NotEnoughSubjects(
                f"subject {k + 1} has a mask in only {fraction:.0%} of frames (min_presence {config.min_presence:.0%})"
            )
    return ClipMasks(masks, [int(i) for i in ids], prompt_frame, frames)


def provided_masks(clip: ClipRecord, video: VideoConfig) -> np.ndarray:
    """The user's masks of a folder clip (validated against its video), in training geometry."""
    if clip.masks is None:
        raise MaskFileError(
            f"clip {clip.clip_id}: no {clip.clip_id}{MASKS_NPZ} or {clip.clip_id}{MASKS_DIR}/ beside the video "
            "(masks.backend=provided)"
        )
    masks = read_user_masks(clip.masks, clip.clip_id, clip.frames, clip.height, clip.width)
    return preprocess_masks(masks, clip.fps, video, clip.start_seconds)


def make_masks(
    manifest: Manifest,
    location: str,
    video: VideoConfig,
    config: MaskConfig,
    fingerprint: str = "",
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """The make_masks stage: pixel + latent masks of every manifest clip into `location`.

    Writes `<location>/masks.zarr` (layout in docs/artifacts.md) and one preview PNG per clip in
    `<location>/previews/`. `location` is a local folder or an fsspec URL. A clip with fewer
    than two subjects is recorded as skipped, a clip that cannot be processed as failed, both
    with the reason; neither stops the stage. `progress(done)` is called after every clip.
    Returns the summary (counts and reasons).
    """
    models = SegmentationModels.load(config)
    fs, root = fsspec.core.url_to_fs(location)
    n, height, width = len(manifest.clips), video.height, video.width
    f, h, w = latent_shape(video)
    group = zarr.open_group(zarr_location(f"{location}/{MASKS_STORE}"), mode="w")
    packed_shape = (video.num_frames, SUBJECTS, height, (width + 7) // 8)
    pixel = group.create_array(
        "pixel", shape=(n, *packed_shape), chunks=(1, *packed_shape), dtype="uint8", fill_value=0
    )
    latent = group.create_array(
        "latent", shape=(n, f, len(MASK_CHANNELS), h, w), chunks=(1, f, len(MASK_CHANNELS), h, w),
        dtype="float32", fill_value=np.nan,
    )
    records: list[dict[str, Any]] = []
    clips = tqdm(manifest.clips, desc=f"make_masks {manifest.relation}", unit="clip", disable=None)
    for i, clip in enumerate(clips):
        record: dict[str, Any] = {"clip_id": clip.clip_id, "status": "ok", "reason": ""}
        try:
            result = clip_masks(clip, video, config, models)
        except NotEnoughSubjects as exc:
            record.update(status="skipped", reason=str(exc))
        except Exception as exc:  # one bad clip must not stop the stage; the reason is kept
            record.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
        if record["status"] == "ok":
            record.update(_write_clip(result, i, clip.clip_id, pixel, latent, fs, root, config, video))
        else:
            log.warning("make_masks: %s %s: %s", record["status"], clip.clip_id, record["reason"])
        records.append(record)
        if progress is not None:
            progress(i + 1)
    summary = _summary(records)
    group.attrs.update(
        {
            "format_version": FORMAT_VERSION,
            "stage": "make_masks",
            "relation": manifest.relation,
            "fingerprint": fingerprint,
            "backend": config.backend,
            "config": config.model_dump(mode="json"),
            "video": video.model_dump(mode="json"),
            "channels": list(MASK_CHANNELS),
            "pixel_packing": {"axis": -1, "bitorder": "big", "width": width},
            "clips": records,
            "summary": summary,
        }
    )
    log.info(
        "make_masks %s: %d ok, %d skipped, %d failed of %d clips",
        manifest.relation, summary["ok"], summary["skipped"], summary["failed"], n,
    )
    return summary


def _write_clip(
    result: ClipMasks, row: int, clip_id: str, pixel: zarr.Array, latent: zarr.Array,
    fs: fsspec.AbstractFileSystem, root: str, config: MaskConfig, video: VideoConfig,
) -> dict[str, Any]:
    """Store one clip's packed pixel masks, latent masks and preview; return its record fields."""
    pixel[row] = pack_masks(result.pixel)
    latent[row] = latent_masks(result.pixel, video.temporal_compression)
    preview = preview_image(result.frames, result.pixel, config.preview_frames, config.preview_width)
    fs.makedirs(f"{root}/{PREVIEWS_DIR}", exist_ok=True)
    fs.pipe_file(f"{root}/{PREVIEWS_DIR}/{clip_id}.png", png_bytes(preview))
    return {
        "subject_ids": result.subject_ids,
        "prompt_frame": result.prompt_frame,
        "coverage": [round(float(c), 4) for c in result.pixel.mean(axis=(0, 2, 3))],
        "preview": f"{PREVIEWS_DIR}/{clip_id}.png",
    }


def _summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    counts = {status: sum(r["status"] == status for r in records) for status in ("ok", "skipped", "failed")}
    reasons = {r["clip_id"]: r["reason"] for r in records if r["status"] != "ok"}
    return {"clips": len(records), **counts, "reasons": reasons}
