"""Reader and writer for the NTU RGB+D `.skeleton` text format (METHOD.md §8).

Layout of a file, one value group per line:

    <frame count>
    per frame:  <body count>
      per body: <bodyID clippedEdges handLeftConfidence handLeftState handRightConfidence
                 handRightState isRestricted leanX leanY trackingState>
                <joint count (25)>
                25 x <x y z depthX depthY colorX colorY orientW orientX orientY orientZ trackingState>

Frames may hold 0-4 bodies. Errors name the file and the 1-based line number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

import numpy as np

NUM_JOINTS = 25
BODY_INFO_FIELDS = 10
JOINT_FIELDS = 12
MAX_BODIES = 4

# Columns of a joint row.
COLOR_X, COLOR_Y, JOINT_TRACKING = 5, 6, 11
NOT_TRACKED, INFERRED, TRACKED = 0, 1, 2


class SkeletonFormatError(ValueError):
    """A `.skeleton` file that does not follow the NTU format; names file and line."""


@dataclass(frozen=True)
class Body:
    """One body in one frame: its tracker id, the 10 info values and 25 joints x 12 values."""

    body_id: int
    info: np.ndarray  # (10,) float64, info[0] repeated as float for completeness
    joints: np.ndarray  # (25, 12) float64

    @property
    def color_xy(self) -> np.ndarray:
        """Joint positions in RGB-frame pixels, (25, 2)."""
        return self.joints[:, [COLOR_X, COLOR_Y]]

    @property
    def tracked(self) -> np.ndarray:
        """Boolean (25,) mask of joints whose trackingState is 2 (tracked)."""
        return self.joints[:, JOINT_TRACKING] == TRACKED


@dataclass(frozen=True)
class SkeletonSequence:
    """All frames of one clip; `frames[t]` lists the bodies seen in frame t (0-4)."""

    path: str
    frames: list[list[Body]] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def bodies_per_frame(self) -> np.ndarray:
        """Number of bodies in each frame, (T,) int."""
        return np.array([len(bodies) for bodies in self.frames], dtype=int)

    def tracked_bodies_per_frame(self, min_joints: int = 1) -> np.ndarray:
        """Bodies per frame with at least `min_joints` tracked joints, (T,) int."""
        return np.array(
            [sum(int(b.tracked.sum()) >= min_joints for b in bodies) for bodies in self.frames],
            dtype=int,
        )

    def fraction_outside(self, width: int, height: int, margin: float = 0.1) -> float:
        """Fraction of tracked joints whose colorX/colorY lie outside a width x height frame.

        A joint counts as outside when it is more than `margin` of the frame size beyond an
        edge (Kinect reports joints of a body at the border slightly off-frame). 0 when no
        joint is tracked.
        """
        xy = [body.color_xy[body.tracked] for bodies in self.frames for body in bodies]
        points = np.concatenate(xy) if xy else np.zeros((0, 2))
        if not len(points):
            return 0.0
        x, y = points[:, 0], points[:, 1]
        outside = (x < -margin * width) | (x > (1 + margin) * width) | (y < -margin * height) | (y > (1 + margin) * height)
        return float(outside.mean())

    def body_ids(self) -> list[int]:
        """Distinct body ids in order of first appearance."""
        seen: dict[int, None] = {}
        for bodies in self.frames:
            for body in bodies:
                seen.setdefault(body.body_id, None)
        return list(seen)

    def track(self, body_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Colour-pixel joints (T, 25, 2) and tracked mask (T, 25) of one body; NaN/False where absent."""
        xy = np.full((self.num_frames, NUM_JOINTS, 2), np.nan)
        tracked = np.zeros((self.num_frames, NUM_JOINTS), dtype=bool)
        for t, bodies in enumerate(self.frames):
            for body in bodies:
                if body.body_id == body_id:
                    xy[t], tracked[t] = body.color_xy, body.tracked
        return xy, tracked


class _Lines:
    """Numbered, non-empty lines of a file with errors that say where."""

    def __init__(self, handle: IO[str], name: str):
        self._it: Iterator[tuple[int, str]] = (
            (n, line.strip()) for n, line in enumerate(handle, start=1) if line.strip()
        )
        self.name = name
        self.line = 0

    def fail(self, what: str) -> SkeletonFormatError:
        return SkeletonFormatError(f"{self.name}, line {self.line}: {what}")

    def values(self, count: int, what: str) -> list[str]:
        try:
            self.line, text = next(self._it)
        except StopIteration:
            raise SkeletonFormatError(
                f"{self.name}: file ends after line {self.line}, expected {what} (truncated file?)"
            ) from None
        parts = text.split()
        if len(parts) != count:
            raise self.fail(f"expected {count} value(s) for {what}, found {len(parts)}: {text[:80]!r}")
        return parts

    def integer(self, what: str) -> int:
        (text,) = self.values(1, what)
        try:
            return int(text)
        except ValueError:
            raise self.fail(f"expected an integer {what}, found {text!r}") from None

    def floats(self, count: int, what: str) -> np.ndarray:
        parts = self.values(count, what)
        try:
            return np.array([float(p) for p in parts])
        except ValueError:
            raise self.fail(f"non-numeric value in {what}: {' '.join(parts)[:80]!r}") from None


def parse_skeleton(handle: IO[str], name: str = "<skeleton>") -> SkeletonSequence:
    """Parse an open `.skeleton` text stream."""
    lines = _Lines(handle, name)
    num_frames = lines.integer("frame count")
    frames: list[list[Body]] = []
    for t in range(num_frames):
        num_bodies = lines.integer(f"body count of frame {t + 1}")
        if not 0 <= num_bodies <= MAX_BODIES:
            raise lines.fail(f"frame {t + 1} has {num_bodies} bodies (0-{MAX_BODIES} allowed)")
        bodies = []
        for _ in range(num_bodies):
            parts = lines.values(BODY_INFO_FIELDS, f"body info of frame {t + 1}")
            try:
                body_id = int(parts[0])
                info = np.array([float(p) for p in parts])
            except ValueError:
                raise lines.fail(f"non-numeric body info: {' '.join(parts)[:80]!r}") from None
            num_joints = lines.integer("joint count")
            if num_joints != NUM_JOINTS:
                raise lines.fail(f"joint count {num_joints}, expected {NUM_JOINTS}")
            joints = np.stack([lines.floats(JOINT_FIELDS, "joint") for _ in range(num_joints)])
            bodies.append(Body(body_id, info, joints))
        frames.append(bodies)
    return SkeletonSequence(name, frames)


def read_skeleton(path: str | Path) -> SkeletonSequence:
    """Read a `.skeleton` file from a local path."""
    with open(path, encoding="utf-8", errors="strict") as handle:
        return parse_skeleton(handle, str(path))


def format_skeleton(frames: list[list[Body]]) -> str:
    """Serialise frames of bodies to the NTU text format (inverse of `parse_skeleton`)."""
    out = [str(len(frames))]
    for bodies in frames:
        out.append(str(len(bodies)))
        for body in bodies:
            info = [str(body.body_id)] + [_num(v) for v in body.info[1:]]
            out.append(" ".join(info))
            out.append(str(NUM_JOINTS))
            for joint in body.joints:
                row = [_num(v) for v in joint[:JOINT_TRACKING]] + [str(int(joint[JOINT_TRACKING]))]
                out.append(" ".join(row))
    return "\n".join(out) + "\n"


def write_skeleton(path: str | Path, frames: list[list[Body]]) -> None:
    """Write frames of bodies as an NTU `.skeleton` file."""
    Path(path).write_text(format_skeleton(frames), encoding="utf-8")


def _num(value: float) -> str:
    return f"{value:.7g}"
