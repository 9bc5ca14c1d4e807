"""Small pictures and readable numbers for people watching a run (no Prefect, no models).

- `frame_strip`: first / middle / last frame of a clip side by side, at a small height;
- `pick_tiles`: the same three tiles out of a wider strip (the make_masks preview PNGs);
- `image_data_uri`: a JPEG or PNG `data:` URI kept under a byte budget (downscaled until it fits),
  the one image form a browser shows from anywhere (a `file://` link never opens from a web page);
- `round_sig` / `format_sig`: numbers to 4 significant figures, the one rounding rule for numbers
  shown to people (UI tables, progress notes, the training log line);
"""

from __future__ import annotations

import base64
import math
from typing import Any, Literal

import cv2
import numpy as np

ImageFormat = Literal["jpeg", "png"]
#: A frame strip's default height in pixels (three frames of a 480x848 video: about 510x96).
STRIP_HEIGHT = 96
#: Default byte budget of one image (the encoded file, before base64).
MAX_IMAGE_BYTES = 40_000


def frame_picks(count: int, keep: int = 3) -> list[int]:
    """Indices of `keep` evenly spaced items of `count`, first and last included (first/middle/last)."""
    if count <= 0:
        raise ValueError("no frames to pick from")
    return sorted({int(i) for i in np.linspace(0, count - 1, min(keep, count)).round()})


def _resize(image: np.ndarray, height: int) -> np.ndarray:
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    interpolation = cv2.INTER_AREA if height < image.shape[0] else cv2.INTER_NEAREST
    return cv2.resize(image, (width, height), interpolation=interpolation)


def frame_strip(frames: np.ndarray, keep: int = 3, height: int = STRIP_HEIGHT, gap: int = 2) -> np.ndarray:
    """First / middle / last of (N, H, W, 3) uint8 frames side by side, each `height` pixels high.

    Tiny videos are enlarged (nearest neighbour) so they can be seen; `gap` white pixels part them.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames (N, H, W, 3), got shape {frames.shape}")
    tiles = [_resize(np.ascontiguousarray(frames[i]).astype(np.uint8), height) for i in frame_picks(len(frames), keep)]
    return _join(tiles, gap)


def pick_tiles(strip: np.ndarray, tile_width: int, keep: int = 3, height: int = STRIP_HEIGHT, gap: int = 2) -> np.ndarray:
    """`keep` tiles (first / middle / last) of a strip made of equal tiles `tile_width` wide.

    A strip whose width is not a multiple of `tile_width` is taken as one picture and only resized.
    """
    width = strip.shape[1]
    if tile_width <= 0 or width % tile_width or width // tile_width < 1:
        return _resize(strip, height)
    count = width // tile_width
    tiles = [_resize(strip[:, i * tile_width : (i + 1) * tile_width], height) for i in frame_picks(count, keep)]
    return _join(tiles, gap)


def _join(tiles: list[np.ndarray], gap: int) -> np.ndarray:
    if gap <= 0 or len(tiles) == 1:
        return np.concatenate(tiles, axis=1)
    spacer = np.full((tiles[0].shape[0], gap, 3), 255, dtype=np.uint8)
    parts: list[np.ndarray] = []
    for tile in tiles:
        parts += [spacer, tile] if parts else [tile]
    return np.concatenate(parts, axis=1)


def encode_image(image: np.ndarray, fmt: ImageFormat = "jpeg", quality: int = 80) -> bytes:
    """JPEG or PNG bytes of an RGB uint8 image."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 9]
    ok, data = cv2.imencode(f".{'jpg' if fmt == 'jpeg' else 'png'}", np.ascontiguousarray(image[..., ::-1]), params)
    if not ok:
        raise ValueError(f"{fmt} encoding failed")
    return data.tobytes()


def decode_image(data: bytes) -> np.ndarray:
    """RGB uint8 image from PNG / JPEG bytes."""
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("not a PNG or JPEG image")
    return image[..., ::-1].copy()


def data_uri(data: bytes, fmt: ImageFormat = "jpeg") -> str:
    return f"data:image/{fmt};base64,{base64.b64encode(data).decode('ascii')}"


def image_data_uri(image: np.ndarray, fmt: ImageFormat = "jpeg", max_bytes: int = MAX_IMAGE_BYTES) -> str:
    """A `data:image/...;base64,` URI of `image`, halved in size until the file fits `max_bytes`."""
    data = encode_image(image, fmt)
    while len(data) > max_bytes and min(image.shape[:2]) > 8:
        image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
        data = encode_image(image, fmt)
    return data_uri(data, fmt)


def decode_data_uri(uri: str) -> tuple[str, bytes]:
    """(mime type, bytes) of a base64 `data:` URI."""
    head, _, payload = uri.partition(",")
    if not head.startswith("data:") or not head.endswith(";base64"):
        raise ValueError(f"not a base64 data URI: {uri[:40]!r}")
    return head[5:-7], base64.b64decode(payload)


def round_sig(value: Any, digits: int = 4) -> float | int | None:
    """`value` rounded to `digits` significant figures; None for None, NaN, inf and non-numbers."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    value = float(value) if isinstance(value, (float, np.floating)) else int(value)
    if isinstance(value, int):
        return value
    if not math.isfinite(value):
        return None
    if value == 0:
        return 0.0
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def format_sig(value: Any, digits: int = 4, missing: str = "n/a") -> str:
    """`round_sig` as text (`0.3333`, `1235`, `1.235e+05` for big numbers); `missing` when absent."""
    rounded = round_sig(value, digits)
    if rounded is None:
        return missing
    if isinstance(rounded, int):
        return str(rounded)
    return f"{rounded:.{digits}g}"


def format_seconds(seconds: float | None) -> str:
    """`1:02:03` / `2:03` / `4.2 s` for a duration; `-` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
