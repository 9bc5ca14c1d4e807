"""Paired bootstrap confidence intervals for method comparisons (issue 21 §4), and the Wilson
interval of a proportion (the toy base's unnamed-attribute gates, issue 21 §3).

Two methods are judged on the same units: the same (relation, seed) *clusters* and, within each,
the same prompts (*items*). The difference of their mean scores is resampled two-level: clusters
with replacement, then items with replacement within each drawn cluster, and the same draw is
applied to both methods (paired). Values that do not apply to a unit are NaN and are left out of
the means (for both methods, so the pair stays matched).

Plain numpy; every draw comes from the given seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Difference:
    """Mean of a - b over the units both apply to, and its bootstrap interval."""

    mean: float
    low: float
    high: float
    units: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def text(self) -> str:
        """`+0.123 [+0.050, +0.200]`."""
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def paired_difference(a: np.ndarray, b: np.ndarray, resamples: int = 2000, seed: int = 0,
                      level: float = 0.95) -> Difference:
    """Mean of `a - b` with a two-level paired percentile bootstrap interval.

    `a`, `b`: (clusters, items) arrays of per-video values; NaN in either marks a unit left out.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"paired values must be two (clusters, items) arrays of one shape, got {a.shape} and {b.shape}")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"need resamples >= 1 and 0 < level < 1, got {resamples}, {level}")
    difference = a - b  # NaN where either is NaN
    valid = ~np.isnan(difference)
    if not valid.any():
        raise ValueError("no unit where both methods have a value")
    rng = np.random.default_rng([seed, 2121])
    clusters, items = difference.shape
    values = np.nan_to_num(difference)
    means = np.empty(resamples)
    for r in range(resamples):
        rows = rng.integers(clusters, size=clusters)
        cols = rng.integers(items, size=(clusters, items))
        picked_values = values[rows[:, None], cols]
        picked_valid = valid[rows[:, None], cols]
        count = picked_valid.sum()
        means[r] = picked_values[picked_valid].sum() / count if count else np.nan
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(means, [tail, 100 - tail])
    return Difference(float(values[valid].mean()), float(low), float(high), int(valid.sum()))


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion `successes / n` (z = 1.96: 95 %).

    Used where a share is compared with a threshold from a few dozen videos: the interval says
    whether the data show the share beyond it, which a point estimate cannot.
    """
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got {successes} of {n}")
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    return float((centre - spread) / scale), float((centre + spread) / scale)
