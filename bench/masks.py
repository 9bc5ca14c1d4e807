"""Benchmark: pixel masks -> latent masks for one 61-frame 1080x1920 two-subject clip (METHOD.md §3).

Times the make_masks work after segmentation: centre crop + resize of both subject masks to the
480x848 training geometry, any-coverage reduction to the 60x106 latent grid, union and causal
T_c = 6 averaging to (11, 3, 60, 106), and bit-packing for storage.
Target: at most 1 s per clip on 2 CPU cores. The last line printed is the median seconds per clip over the runs.
"""

from __future__ import annotations

import time

import numpy as np

from dreamrelation.data.masks import latent_masks, pack_masks, preprocess_masks
from dreamrelation.data.video import VideoConfig


def two_subject_clip(frames: int = 61, height: int = 1080, width: int = 1920) -> np.ndarray:
    """(T, 2, H, W) bool: two ellipses walking towards each other."""
    yy, xx = np.mgrid[:height, :width]
    masks = np.zeros((frames, 2, height, width), dtype=bool)
    for t in range(frames):
        for k, (x0, dx) in enumerate(((500, 6), (1400, -6))):
            cx, cy = x0 + dx * t, 600
            masks[t, k] = ((xx - cx) / 180) ** 2 + ((yy - cy) / 420) ** 2 <= 1
    return masks


def main(repeats: int = 5) -> None:
    masks = two_subject_clip()
    video = VideoConfig()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        pixel = preprocess_masks(masks, 30.0, video)
        latent = latent_masks(pixel)
        pack_masks(pixel)
        times.append(time.perf_counter() - start)
    print(f"input {masks.shape} -> pixel {pixel.shape} -> latent {latent.shape} {latent.dtype}")
    print(f"runs: {', '.join(f'{t:.3f}' for t in times)} s")
    print(f"seconds per clip: {float(np.median(times)):.3f}")


if __name__ == "__main__":
    main()
