"""Video I/O and the preprocessing every stage shares (METHOD.md §1 and §8).

A training clip is: decode -> centre-crop to the target aspect (848:480 by default) ->
resize -> resample to 30 fps -> keep the first N frames with N = T_c k + 1 (the causal VAE
compresses time by T_c: 6 on Mochi-1, 4 on Wan, so N frames give (N - 1) / T_c + 1 latent frames).
The same crop/resize is applied to masks (`crop_box`, `resize_frames`), so a pixel of a
mask stays on the pixel of the frame it belongs to.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Annotated, Any, ClassVar, Literal

import av
import cv2
import numpy as np
from pydantic import AfterValidator, Field, model_validator

from dreamrelation.configbase import StrictConfig

log = logging.getLogger("dreamrelation.video")

#: T_c of the causal video VAEs: 6 on Mochi-1 (METHOD.md §1), 4 on Wan 2.1 (§9). Mochi's is the default.
TEMPORAL_COMPRESSION = 6
TEMPORAL_COMPRESSIONS = (6, 4)


def _check_frame_count(value: int) -> int:
    if value < 1 or all((value - 1) % factor for factor in TEMPORAL_COMPRESSIONS):
        raise ValueError(f"{value} frames fits no video VAE: Mochi-1 needs 6k+1 (e.g. 25, 61), Wan 4k+1 (e.g. 25, 81)")
    return value


def _check_multiple_of_16(value: int) -> int:
    if value <= 0 or value % 16:
        raise ValueError(f"{value} is not a positive multiple of 16")
    return value


#: A clip length some causal VAE accepts (6k + 1 or 4k + 1 frames; the model family's T_c is checked
#: with the pipeline config) and a frame side it accepts (16 | size).
FrameCount = Annotated[int, AfterValidator(_check_frame_count)]
FrameSide = Annotated[int, AfterValidator(_check_multiple_of_16)]


class VideoConfig(StrictConfig):
    """Target format of training clips (METHOD.md §1: 61 frames, 480x848, 30 fps)."""

    num_frames: FrameCount = Field(
        61, description="Frames per clip; must be T_c k + 1 (Mochi-1: 61 -> 11 latent frames; Wan: 81 -> 21)"
    )
    height: FrameSide = Field(480, description="Height in pixels after crop/resize (multiple of 16)")
    width: FrameSide = Field(848, description="Width in pixels after crop/resize (multiple of 16)")
    fps: float = Field(30.0, gt=0, description="Frame rate clips are resampled to")
    aspect: float = Field(848 / 480, gt=0, description="Width/height of the centre crop taken before resizing")
    temporal_compression: Literal[6, 4] = Field(
        6,
        description="T_c of the base model's VAE, which clips and latent masks follow: 6 for Mochi-1, 4 for Wan "
        "(must match model.family; checked)",
    )

    added_later: ClassVar[dict[str, Any]] = {"temporal_compression": 6}

    @model_validator(mode="after")
    def _frames_fit_the_vae(self) -> VideoConfig:
        latent_frames(self.num_frames, self.temporal_compression)
        return self

    @property
    def latent_frames(self) -> int:
        """Latent frames of a clip: (num_frames - 1) / T_c + 1."""
        return latent_frames(self.num_frames, self.temporal_compression)


class VideoError(ValueError):
    """A video that cannot be used: unreadable, empty or too short. The message names it."""


@dataclass(frozen=True)
class VideoInfo:
    """What a clip's container says about it."""

    frames: int
    fps: float
    width: int
    height: int


def latent_frames(num_frames: int, temporal_compression: int = TEMPORAL_COMPRESSION) -> int:
    """Latent frames f = (F - 1) / T_c + 1 for a clip of F = T_c k + 1 frames (METHOD.md §1: 61 -> 11 at T_c = 6;
    §9: 81 -> 21 at T_c = 4)."""
    if num_frames < 1 or (num_frames - 1) % temporal_compression:
        examples = ", ".join(str(temporal_compression * k + 1) for k in (4, 10, 20))
        raise ValueError(
            f"{num_frames} frames is not of the form {temporal_compression}k+1 (e.g. {examples}), "
            f"which a VAE with temporal compression {temporal_compression} needs"
        )
    return (num_frames - 1) // temporal_compression + 1


def probe_video(path: str | Path | IO[bytes], name: str | None = None) -> VideoInfo:
    """Read frame count, frame rate and size from the container (decoding if it has no count).

    `name` is what error messages call the video (give it when `path` is an open file object).
    """
    if name is None:
        name = str(getattr(path, "path", None) or path) if hasattr(path, "read") else str(path)
    try:
        with av.open(path if hasattr(path, "read") else str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0) or 30.0
            frames = stream.frames or sum(1 for _ in container.decode(stream))
            return VideoInfo(frames, fps, stream.codec_context.width, stream.codec_context.height)
    except (av.error.FFmpegError, IndexError, OSError) as exc:
        raise VideoError(f"cannot read video {name}: {_reason(exc)}") from exc


def _reason(exc: Exception) -> str:
    """What went wrong, without the file object or path PyAV puts in its messages."""
    if isinstance(exc, IndexError):
        return "no video stream"
    return getattr(exc, "strerror", None) or str(exc)  # FFmpegError and OSError carry strerror


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """Decode every frame as RGB uint8 (T, H, W, 3) and return it with the frame rate."""
    frames = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0) or 30.0
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
    except (av.error.FFmpegError, IndexError, OSError) as exc:
        raise VideoError(f"cannot read video {path}: {_reason(exc)}") from exc
    if not frames:
        raise VideoError(f"video {path} has no decodable frames")
    return np.stack(frames), fps


X264 = {"crf": "18", "preset": "veryfast"}
#: Video containers `write_video` writes and `read_video` reads (folder datasets, reference sets).
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def write_video(path: str | Path, frames: np.ndarray, fps: float) -> None:
    """Write RGB uint8 frames (T, H, W, 3): H.264 for .mp4/.mov/.mkv, Motion-JPEG for .avi, VP9 for .webm.

    The file is written under a temporary name and renamed, so a crash never leaves a
    truncated video under the final name.
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"write_video expects uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    codec, pix_fmt, options = {
        ".mp4": ("libx264", "yuv420p", X264),
        ".mov": ("libx264", "yuv420p", X264),
        ".mkv": ("libx264", "yuv420p", X264),
        ".avi": ("mjpeg", "yuvj420p", {}),
        ".webm": ("libvpx-vp9", "yuv420p", {"crf": "20", "b": "0", "deadline": "realtime"}),
    }.get(path.suffix.lower(), (None, None, None))
    if codec is None:
        raise ValueError(f"unsupported video extension {path.suffix!r} for {path} (use .mp4, .mov, .mkv, .avi or .webm)")
    height, width = frames.shape[1:3]
    if codec == "libx264" and (height % 2 or width % 2):
        raise ValueError(f"H.264 needs even frame sizes, got {width}x{height} for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    with av.open(str(tmp), mode="w", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001), options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.thread_count = 1  # fewer run-to-run byte differences (x264's threads vary its output)
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)


def crop_box(height: int, width: int, aspect: float) -> tuple[int, int, int, int]:
    """Centre crop (top, left, crop_h, crop_w) of a height x width image to width/height = aspect."""
    if width / height > aspect:
        crop_w, crop_h = round(height * aspect), height
    else:
        crop_w, crop_h = width, round(width / aspect)
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def resample_indices(num_frames: int, src_fps: float, dst_fps: float, start: float = 0.0) -> np.ndarray:
    """Source frame index for each output frame when converting src_fps to dst_fps (nearest earlier).

    Output frame k shows the source at `start + k / dst_fps` seconds; frames before `start` are skipped.
    """
    duration = num_frames / src_fps - start
    count = max(int(np.floor(duration * dst_fps + 1e-6)), 0)
    times = start * src_fps + np.arange(count) * src_fps / dst_fps
    return np.minimum(np.floor(times + 1e-6).astype(int), num_frames - 1)


def resize_frames(frames: np.ndarray, height: int, width: int, nearest: bool = False) -> np.ndarray:
    """Resize (T, H, W[, C]) frames; area averaging for images, nearest for label masks."""
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    return np.stack([cv2.resize(f, (width, height), interpolation=interp) for f in frames])


def preprocess_frames(
    frames: np.ndarray,
    src_fps: float,
    num_frames: int,
    height: int,
    width: int,
    fps: float = 30.0,
    aspect: float = 848 / 480,
    nearest: bool = False,
    name: str = "clip",
    start: float = 0.0,
) -> np.ndarray:
    """Resample to `fps`, keep the first `num_frames` from `start` seconds, centre-crop to `aspect`, resize.

    Works on RGB frames (T, H, W, 3) and on masks (T, H, W) or (T, H, W, K) alike, so masks
    follow their video exactly; pass nearest=True for label masks.
    """
    _check_frame_count(num_frames)  # T_c k + 1 for some VAE (the family's T_c is checked with the config)
    index = resample_indices(len(frames), src_fps, fps, start)
    if len(index) < num_frames:
        after = f" after {start:g} s" if start else ""
        raise VideoError(f"{name} is too short: {len(index)} frames at {fps:g} fps{after}, {num_frames} needed")
    frames = frames[index[:num_frames]]
    top, left, crop_h, crop_w = crop_box(frames.shape[1], frames.shape[2], aspect)
    frames = frames[:, top : top + crop_h, left : left + crop_w]
    return resize_frames(np.ascontiguousarray(frames), height, width, nearest=nearest)


def load_clip(
    path: str | Path,
    num_frames: int,
    height: int,
    width: int,
    fps: float = 30.0,
    aspect: float = 848 / 480,
    start: float = 0.0,
) -> np.ndarray:
    """Decode and preprocess one clip to uint8 (num_frames, height, width, 3), its window from `start` seconds."""
    frames, src_fps = read_video(path)
    warn_if_crop_discards_most(str(path), frames.shape[1], frames.shape[2], aspect)
    return preprocess_frames(frames, src_fps, num_frames, height, width, fps, aspect, name=str(path), start=start)


def warn_if_crop_discards_most(name: str, height: int, width: int, aspect: float) -> float:
    """Log a warning when the centre crop to `aspect` keeps less than half the frame; returns the kept fraction.

    A portrait or square video cropped to 848:480 keeps a third of its pixels: the subjects may
    be cut off, and a user should know before training on it.
    """
    _, _, crop_h, crop_w = crop_box(height, width, aspect)
    kept = crop_h * crop_w / (height * width)
    if kept < 0.5:
        log.warning(
            "%s: the centre crop to %.2f:1 keeps only %.0f%% of its %dx%d frame (portrait or square video?); "
            "subjects near the edges are cut off", name, aspect, 100 * kept, width, height,
        )
    return kept
