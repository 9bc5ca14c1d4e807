"""Subject masks for hybrid mask training (METHOD.md §3): the numpy mask math and the masks.zarr readers.

Per clip there are two subject masks M_S1, M_S2 (pixel space, one per frame) and the relation
mask M_R = max(M_S1, M_S2). Everything here works in the *training geometry* (`VideoConfig`): the same
resample -> first N frames -> centre crop -> resize that `data.video.preprocess_frames` applies
to the RGB clip (METHOD.md §1), so a mask pixel sits on the video pixel it describes.

From pixel masks to the latent masks the loss uses (`latent_masks`):
1. any-coverage reduction to the latent grid: a latent cell (8x8 pixels) is covered when any of
   its pixels is covered;
2. causal time averaging aligned with the VAE (T_c = 6): latent frame 0 <- pixel frame 0;
   latent frame i >= 1 <- mean of pixel frames 6(i-1)+1 .. 6i.
The result is float32 (f, 3, h, w) for (S1, S2, R) with values in [0, 1]. R is the union taken
per pixel frame *before* time averaging (so R is not max(S1, S2) of the averaged masks).

Subject order (METHOD.md §3 **Decision**): subject1 is the left-most subject (mask centroid)
in the first frame where both subjects are present; the order is fixed for the whole clip.

Pixel-mask storage is bit-packed: `np.packbits` along the width axis, big-endian bit order
(the first pixel of a row is the most significant bit of its first byte), the width padded to a
multiple of 8 with zeros; `unpack_masks(packed, width)` inverts it exactly.

The mask math is plain numpy (no model code). The make_masks stage (`stages/masks.py`) adds
video/skeleton reading, the segmenters (`perception/segment.py`) and the zarr output; the
readers of its artifact are at the end of this file. Store layout: docs/artifacts.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence, TypeVar

import cv2
import numpy as np
import zarr
from pydantic import Field

from dreamrelation.configbase import StrictConfig
from dreamrelation.data.skeleton import SkeletonSequence
from dreamrelation.data.store import zarr_location
from dreamrelation.data.video import (
    TEMPORAL_COMPRESSION,
    VideoConfig,
    VideoError,
    crop_box,
    resample_indices,
)

SPATIAL_COMPRESSION = 8
SUBJECTS = 2
MASK_CHANNELS = ("S1", "S2", "R")
FrameName = TypeVar("FrameName", str, Path)

MaskBackend = Literal["grounded-sam2", "skeleton-sam2", "skeleton-box", "provided"]
#: Backends that need the NTU .skeleton files (not available for folder datasets).
SKELETON_BACKENDS = ("skeleton-sam2", "skeleton-box")


class NotEnoughSubjects(ValueError):
    """Fewer than two subjects could be found in a clip; the message says why (clip is skipped)."""


def latent_shape(video: VideoConfig) -> tuple[int, int, int]:
    """(f, h, w) of the latent grid of clips in the `video` geometry (METHOD.md §1)."""
    return video.latent_frames, video.height // SPATIAL_COMPRESSION, video.width // SPATIAL_COMPRESSION


class MaskConfig(StrictConfig):
    """Parameters of the make_masks stage (METHOD.md §3)."""

    backend: MaskBackend = Field(
        "grounded-sam2",
        description=(
            "grounded-sam2: Grounding DINO boxes on the first frame + SAM2 video propagation; "
            "skeleton-sam2: NTU skeleton boxes as SAM2 prompts; "
            "skeleton-box: skeleton boxes rasterised as masks (no neural network); "
            "provided: your own <clip>.masks.npz or <clip>.masks/ beside each video (folder datasets)"
        ),
    )
    text_prompt: str = Field("person", description="Grounding DINO text prompt for a subject")
    box_threshold: float = Field(0.3, ge=0, le=1, description="Grounding DINO box score threshold")
    text_threshold: float = Field(0.25, ge=0, le=1, description="Grounding DINO text score threshold")
    detector_stride: int = Field(
        6, ge=1, description="If fewer than two people are found, try every stride-th later frame"
    )
    detector_max_tries: int = Field(
        10, ge=1, description="How many frames the detector tries before the clip is skipped"
    )
    box_padding: float = Field(
        0.1, ge=0, description="Skeleton boxes grow by this fraction of their width/height on each side"
    )
    min_tracked_joints: int = Field(
        3, ge=1, description="A body gets a skeleton box in a frame only with this many tracked joints"
    )
    min_presence: float = Field(
        0.5, ge=0, le=1,
        description="Each subject must have a mask in at least this fraction of frames, else the clip is skipped",
    )
    mask_threshold: float = Field(0.0, description="SAM2 mask logit threshold")
    detector_dir: str | None = Field(
        None,
        description="Local folder of a transformers Grounding DINO checkpoint; None: tiny random demo model",
    )
    segmenter_dir: str | None = Field(
        None,
        description="Local folder of a transformers SAM2 video checkpoint; None: tiny random demo model",
    )
    models_cache: str = Field(
        ".dreamrelation/models", description="Folder where the tiny demo detector/segmenter are built"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Torch device of the neural backends: 'auto' picks CUDA when available"
    )
    preview_frames: int = Field(4, ge=1, description="Frames shown in each clip's preview image")
    preview_width: int = Field(320, ge=16, description="Width in pixels of each preview frame")


# -- frame files ---------------------------------------------------------------------------------
_DIGITS = re.compile(r"(\d+)")


def frame_number(name: str | Path) -> int:
    """The frame index in a frame file name: the last run of digits of its stem ('frame10.png' -> 10)."""
    runs = _DIGITS.findall(Path(name).stem)
    if not runs:
        raise ValueError(f"frame file {name!s} has no number in its name")
    return int(runs[-1])


def sort_frame_files(names: Iterable[FrameName]) -> list[FrameName]:
    """Frame files in numeric order, so frame10 follows frame9 (METHOD.md §3 **Decision**)."""
    return sorted(names, key=frame_number)


# -- skeleton boxes ------------------------------------------------------------------------------
def skeleton_boxes(
    xy: np.ndarray,
    tracked: np.ndarray,
    height: int,
    width: int,
    padding: float = 0.1,
    min_joints: int = 3,
) -> np.ndarray:
    """Per-frame boxes (T, 4) as x0, y0, x1, y1 pixels from one body's colour joints.

    Only tracked joints count; the box of the tracked joints grows by `padding` times its
    width/height on each side and is clipped to the frame. Frames with fewer than
    `min_joints` tracked joints (or none inside the frame) get NaN.
    """
    valid = tracked & np.isfinite(xy).all(axis=-1)
    x = np.where(valid, xy[..., 0], np.nan)
    y = np.where(valid, xy[..., 1], np.nan)
    boxes = np.full((len(xy), 4), np.nan)
    ok = valid.sum(axis=1) >= min_joints
    if not ok.any():
        return boxes
    x0, x1 = np.nanmin(x[ok], axis=1), np.nanmax(x[ok], axis=1)
    y0, y1 = np.nanmin(y[ok], axis=1), np.nanmax(y[ok], axis=1)
    pad_x, pad_y = padding * (x1 - x0), padding * (y1 - y0)
    box = np.stack(
        [
            np.clip(x0 - pad_x, 0, width),
            np.clip(y0 - pad_y, 0, height),
            np.clip(x1 + pad_x, 0, width),
            np.clip(y1 + pad_y, 0, height),
        ],
        axis=1,
    )
    empty = (box[:, 2] <= box[:, 0]) | (box[:, 3] <= box[:, 1])
    box[empty] = np.nan
    boxes[ok] = box
    return boxes


def subject_bodies(skeleton: SkeletonSequence, min_joints: int = 3) -> list[int]:
    """The two body ids with the most frames of >= min_joints tracked joints (NTU may list noise bodies).

    Raises NotEnoughSubjects when fewer than two bodies qualify.
    """
    counts: dict[int, int] = {}
    for bodies in skeleton.frames:
        for body in bodies:
            if int(body.tracked.sum()) >= min_joints:
                counts[body.body_id] = counts.get(body.body_id, 0) + 1
    if len(counts) < SUBJECTS:
        raise NotEnoughSubjects(
            f"{skeleton.path}: {len(counts)} skeleton body/bodies with >= {min_joints} tracked joints, 2 needed"
        )
    ranked = sorted(counts, key=lambda body_id: -counts[body_id])
    return ranked[:SUBJECTS]


def clip_frame_indices(num_source: int, src_fps: float, video: VideoConfig, start: float = 0.0) -> np.ndarray:
    """Source frame index of each training frame (resample to video.fps, first N frames from `start` s)."""
    index = resample_indices(num_source, src_fps, video.fps, start)
    if len(index) < video.num_frames:
        raise VideoError(
            f"{num_source} frames at {src_fps:g} fps give {len(index)} frames at {video.fps:g} fps, "
            f"{video.num_frames} needed"
        )
    return index[: video.num_frames]


def transform_boxes(boxes: np.ndarray, src_height: int, src_width: int, video: VideoConfig) -> np.ndarray:
    """Map source-pixel boxes (..., 4) through the centre crop and resize of the training geometry.

    Boxes are clipped to the cropped frame; a box entirely outside it becomes NaN.
    """
    top, left, crop_h, crop_w = crop_box(src_height, src_width, video.aspect)
    sx, sy = video.width / crop_w, video.height / crop_h
    out = np.asarray(boxes, dtype=np.float64).copy()
    out[..., [0, 2]] = np.clip((out[..., [0, 2]] - left) * sx, 0, video.width)
    out[..., [1, 3]] = np.clip((out[..., [1, 3]] - top) * sy, 0, video.height)
    empty = (out[..., 2] <= out[..., 0]) | (out[..., 3] <= out[..., 1])
    out[empty] = np.nan
    return out


def rasterize_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Masks (T, K, H, W) bool from boxes (T, K, 4); a pixel is inside when its centre is.

    NaN boxes give empty masks.
    """
    frames, subjects = boxes.shape[:2]
    masks = np.zeros((frames, subjects, height, width), dtype=bool)
    for t in range(frames):
        for k in range(subjects):
            x0, y0, x1, y1 = boxes[t, k]
            if not np.isfinite(boxes[t, k]).all():
                continue
            # pixel j is covered when x0 <= j + 0.5 < x1
            c0, c1 = int(np.ceil(x0 - 0.5)), int(np.ceil(x1 - 0.5))
            r0, r1 = int(np.ceil(y0 - 0.5)), int(np.ceil(y1 - 0.5))
            masks[t, k, max(r0, 0) : max(r1, 0), max(c0, 0) : max(c1, 0)] = True
    return masks


def skeleton_track_boxes(
    skeleton: SkeletonSequence,
    src_fps: float,
    src_height: int,
    src_width: int,
    video: VideoConfig,
    padding: float = 0.1,
    min_joints: int = 3,
) -> tuple[np.ndarray, list[int]]:
    """Boxes (N, 2, 4) in training geometry of the two subject bodies, and their body ids.

    Frame t of the result is the skeleton frame the video's resampling picks for frame t; a
    NaN box means the body has no usable joints there. Identity is the skeleton body id.
    """
    body_ids = subject_bodies(skeleton, min_joints)
    index = clip_frame_indices(skeleton.num_frames, src_fps, video)
    boxes = np.stack(
        [
            skeleton_boxes(*skeleton.track(body_id), src_height, src_width, padding, min_joints)
            for body_id in body_ids
        ],
        axis=1,
    )[index]
    return transform_boxes(boxes, src_height, src_width, video), body_ids


def skeleton_box_masks(boxes: np.ndarray, video: VideoConfig) -> np.ndarray:
    """The `skeleton-box` backend: training-geometry boxes (N, 2, 4) rasterised to (N, 2, H, W) bool.

    Rasterising the mapped boxes at the output size equals rasterising at the source size and
    resizing the masks like the video, up to one pixel at the box edges.
    """
    return rasterize_boxes(boxes, video.height, video.width)


# -- subject order and union ---------------------------------------------------------------------
def subject_order(masks: np.ndarray) -> list[int]:
    """Permutation putting the left-most subject first, judged in the first frame where both are present.

    masks: (T, 2, H, W) bool. Raises NotEnoughSubjects when no frame holds both subjects.
    """
    present = masks.reshape(masks.shape[0], masks.shape[1], -1).any(axis=2)
    both = np.flatnonzero(present.all(axis=1))
    if len(both) == 0:
        raise NotEnoughSubjects(
            f"no frame shows both subjects (subject frames: {present.sum(axis=0).tolist()})"
        )
    columns = masks[both[0]].sum(axis=1)  # (K, W): covered pixels per column
    centre_x = (columns * np.arange(columns.shape[1])).sum(axis=1) / columns.sum(axis=1)
    return [int(k) for k in np.argsort(centre_x, kind="stable")]


def order_subjects(masks: np.ndarray, *per_subject: Sequence) -> tuple[np.ndarray, ...]:
    """Reorder (T, 2, H, W) masks (and any per-subject lists, e.g. ids) by `subject_order`."""
    order = subject_order(masks)
    extra = tuple([items[k] for k in order] for items in per_subject)
    return (masks[:, order], *extra)


def relation_mask(s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """M_R = max(M_S1, M_S2): the union, values stay in [0, 1] (METHOD.md §3 **Decision**)."""
    return np.maximum(s1, s2)


# -- pixel -> latent -----------------------------------------------------------------------------
def preprocess_masks(masks: np.ndarray, src_fps: float, video: VideoConfig, start: float = 0.0) -> np.ndarray:
    """Source-resolution masks (T, K, H0, W0) bool -> training geometry (N, K, H, W) bool.

    The video's preprocessing (METHOD.md §1): resample to video.fps, first N frames from
    `start` seconds, centre crop, nearest resize. Bit-identical to `preprocess_frames(..., nearest=True)` per subject, but
    resizes the selected crop views frame by frame instead of copying the whole clip first.
    """
    masks = np.asarray(masks, dtype=bool)
    index = clip_frame_indices(len(masks), src_fps, video, start)
    top, left, crop_h, crop_w = crop_box(masks.shape[2], masks.shape[3], video.aspect)
    source = masks.view(np.uint8)
    out = np.empty((len(index), masks.shape[1], video.height, video.width), dtype=np.uint8)
    size = (video.width, video.height)
    for i, t in enumerate(index):
        for k in range(masks.shape[1]):
            crop = source[t, k, top : top + crop_h, left : left + crop_w]
            cv2.resize(crop, size, dst=out[i, k], interpolation=cv2.INTER_NEAREST)
    return out.view(bool)


def _cell_blocks(masks: np.ndarray, factor: int) -> np.ndarray:
    """(..., H, W) -> (..., H/factor, factor, W/factor, factor): the pixels of each latent cell."""
    *lead, height, width = masks.shape
    if height % factor or width % factor:
        raise ValueError(f"mask size {height}x{width} is not divisible by {factor}")
    return masks.reshape(*lead, height // factor, factor, width // factor, factor)


def latent_grid(masks: np.ndarray, factor: int = SPATIAL_COMPRESSION) -> np.ndarray:
    """Any-coverage reduction (..., H, W) bool -> (..., H/factor, W/factor) bool."""
    return _cell_blocks(masks, factor).any(axis=-1).any(axis=-2)


def latent_coverage(masks: np.ndarray, factor: int = SPATIAL_COMPRESSION) -> np.ndarray:
    """Covered fraction per latent cell: (..., H, W) bool -> (..., H/factor, W/factor) float32 in [0, 1]."""
    return _cell_blocks(masks, factor).mean(axis=(-1, -3), dtype=np.float32)


def temporal_average(x: np.ndarray, factor: int = TEMPORAL_COMPRESSION) -> np.ndarray:
    """Causal time averaging (F, ...) -> (f, ...) float32 with f = (F-1)/factor + 1.

    Latent frame 0 <- frame 0; latent frame i >= 1 <- mean of frames factor(i-1)+1 .. factor*i.
    """
    frames = x.shape[0]
    if (frames - 1) % factor:
        raise ValueError(f"{frames} frames is not of the form {factor}k+1")
    x = x.astype(np.float32, copy=False)
    rest = x[1:].reshape((frames - 1) // factor, factor, *x.shape[1:]).mean(axis=1)
    return np.concatenate([x[:1], rest], axis=0)


def latent_masks(masks: np.ndarray, temporal_compression: int = TEMPORAL_COMPRESSION) -> np.ndarray:
    """Pixel masks (N, 2, H, W) bool in training geometry -> latent masks (f, 3, h, w) float32.

    Channels are (S1, S2, R) with R the per-frame union; any-coverage, then causal averaging
    over the VAE's T_c frames (METHOD.md §3: 6 on Mochi, 61 -> 11; 4 on Wan, 81 -> 21, §9).
    """
    if masks.ndim != 4 or masks.shape[1] != SUBJECTS:
        raise ValueError(f"expected (N, 2, H, W) masks, got {masks.shape}")
    cells = latent_grid(np.asarray(masks, dtype=bool))  # (N, 2, h, w)
    union = relation_mask(cells[:, 0], cells[:, 1])[:, None]  # any() commutes with max()
    return temporal_average(np.concatenate([cells, union], axis=1), temporal_compression)


# -- storage -------------------------------------------------------------------------------------
def pack_masks(masks: np.ndarray) -> np.ndarray:
    """Bit-pack bool masks (..., W) -> uint8 (..., ceil(W/8)), big-endian bits along the width."""
    return np.packbits(np.asarray(masks, dtype=bool), axis=-1, bitorder="big")


def unpack_masks(packed: np.ndarray, width: int) -> np.ndarray:
    """Inverse of `pack_masks`: uint8 (..., ceil(W/8)) -> bool (..., W)."""
    return np.unpackbits(packed, axis=-1, count=width, bitorder="big").view(bool)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


# -- preview -------------------------------------------------------------------------------------
SUBJECT_COLOURS = np.array([[255, 64, 32], [32, 160, 255]], dtype=np.float32)  # S1 orange-red, S2 blue


def preview_image(
    frames: np.ndarray, masks: np.ndarray, count: int = 4, frame_width: int = 320, alpha: float = 0.5
) -> np.ndarray:
    """A strip of `count` evenly spaced frames with S1/S2 masks overlaid in two colours, uint8 (h, w, 3).

    frames: (N, H, W, 3) uint8; masks: (N, 2, H, W) bool, same geometry.
    """
    picks = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    height = max(1, round(frames.shape[1] * frame_width / frames.shape[2]))
    tiles = []
    for t in picks:
        tile = frames[t].astype(np.float32)
        for k in range(min(masks.shape[1], len(SUBJECT_COLOURS))):
            m = masks[t, k]
            tile[m] = (1 - alpha) * tile[m] + alpha * SUBJECT_COLOURS[k]
        tile = cv2.resize(tile.clip(0, 255).astype(np.uint8), (frame_width, height), interpolation=cv2.INTER_AREA)
        tiles.append(tile)
    return np.concatenate(tiles, axis=1)


def png_bytes(image: np.ndarray) -> bytes:
    """PNG-encoded bytes of an RGB uint8 image (written through fsspec, so any store works)."""
    ok, data = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
    if not ok:
        raise ValueError("PNG encoding failed")
    return data.tobytes()


# -- the masks.zarr store (written by stages/masks.py) -------------------------------------------
MASKS_STORE = "masks.zarr"
PREVIEWS_DIR = "previews"
FORMAT_VERSION = 1


def read_mask_status(location: str) -> dict[str, Any]:
    """The stage's own record of a make_masks artifact: backend, per-clip records, summary."""
    attrs = zarr.open_group(zarr_location(f"{location}/{MASKS_STORE}"), mode="r").attrs
    return {"backend": attrs["backend"], "clips": list(attrs["clips"]), "summary": dict(attrs["summary"])}


def read_pixel_masks(location: str, clip_id: str) -> np.ndarray:
    """Unpacked pixel masks (N, 2, H, W) bool of one clip from a make_masks artifact."""
    group = zarr.open_group(zarr_location(f"{location}/{MASKS_STORE}"), mode="r")
    index = [r["clip_id"] for r in group.attrs["clips"]].index(clip_id)
    return unpack_masks(group["pixel"][index], group.attrs["pixel_packing"]["width"])
