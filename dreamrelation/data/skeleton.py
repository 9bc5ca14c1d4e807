"""Reader and writer for the NTU RGB+D `.skeleton` text format (METHOD.md §8).

Layout of a file, one value group per line:

    <frame count>
    per frame:  <body count>
      per body: <bodyID clippedEdges handLeftConfidence handLeftState handRightConfidence
                 handRightState isRestricted leanX leanY trackingState>
                <joint count (25)>
                25 x <x y z depthX depthY colorX colorY orientW orientX orientY orientZ trackingState>

Frames may hold 0-4 bodies. Errors name the file and the 1-based line number.

Two readers, one result: `parse_skeleton` (the reference: line by line, exact error messages)
and `parse_skeleton_bytes` (the fast one, ~5x faster: the 25-joint blocks of the whole file are
converted in one `numpy.loadtxt` call). The fast reader only answers when it is sure the
reference would return the same arrays; any file it cannot vouch for (a malformed or truncated
file, blank lines, tabs, non-ASCII bytes) goes to the reference, so errors are the same too.
`read_skeleton` uses the fast reader.
"""

from __future__ import annotations

import io
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

# Kinect v2: joints with no orientation, joints that may be "inferred", depth-camera intrinsics
# (512x424, f ~365), colour focal length (~1081 px at 1920 px) and the size of real body ids.
HEAD = 3
LEAF_JOINTS = [HEAD, 15, 19, 21, 22, 23, 24]
DISTAL_JOINTS = [6, 7, 10, 11, 14, 15, 18, 19, 21, 22, 23, 24]
DEPTH_FOCAL, DEPTH_CX, DEPTH_CY = 365.5, 256.0, 212.0
COLOR_FOCAL_PER_WIDTH = 1081.37 / 1920
KINECT_ID_BASE = 72057594037927936  # real NTU body ids look like 72057594037928860


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
        counts = self.bodies_per_frame()
        bodies = [body for frame in self.frames for body in frame]
        if not bodies:
            return np.zeros(len(counts), dtype=int)
        states = np.stack([body.joints[:, JOINT_TRACKING] for body in bodies])  # (B, 25)
        enough = (states == TRACKED).sum(axis=1) >= min_joints
        frame_of = np.repeat(np.arange(len(counts)), counts)
        return np.bincount(frame_of, weights=enough, minlength=len(counts)).astype(int)

    def fraction_outside(self, width: int, height: int, margin: float = 0.1) -> float:
        """Fraction of tracked joints whose colorX/colorY lie outside a width x height frame.

        A joint counts as outside when it is more than `margin` of the frame size beyond an
        edge (Kinect reports joints of a body at the border slightly off-frame). 0 when no
        joint is tracked.
        """
        bodies = [body for frame in self.frames for body in frame]
        if not bodies:
            return 0.0
        joints = np.stack([body.joints for body in bodies])  # (B, 25, 12)
        tracked = joints[:, :, JOINT_TRACKING] == TRACKED
        if not tracked.any():
            return 0.0
        x, y = joints[:, :, COLOR_X][tracked], joints[:, :, COLOR_Y][tracked]
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


#: ASCII characters `str.splitlines` breaks lines at but universal-newline text mode (the reference's
#: line iteration) does not: the fast path leaves files holding one of them to the reference.
_OTHER_LINE_BREAKS = (b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e")


def parse_skeleton_bytes(data: bytes, name: str = "<skeleton>") -> SkeletonSequence:
    """Parse the bytes of a `.skeleton` file (UTF-8): the fast reader, same result as `parse_skeleton`.

    Returns exactly what `parse_skeleton` returns for the same file opened as UTF-8 text, and
    raises the same `SkeletonFormatError` (or `UnicodeDecodeError`) for a file it rejects: any
    file the fast path does not fully accept is handed to the reference reader.
    """
    sequence = _parse_fast(data, name)
    if sequence is None:
        return parse_skeleton(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"), name)
    return sequence


def _parse_fast(data: bytes, name: str) -> SkeletonSequence | None:
    """The fast path; None whenever the reference reader might disagree (it then decides).

    Walks the count lines in Python (frame count, body counts, joint counts: a few hundred
    lines) with the reference's own `split` / `int` rules, and converts the body-info lines and
    all joint lines with `numpy.loadtxt`, whose fields are split at the same whitespace as
    `str.split` and converted by CPython's `PyOS_string_to_double`, the function `float()` uses,
    so the values are bit-identical. Where the two could differ, the fast path gives up: a value
    `float()` takes but `PyOS_string_to_double` does not (`1_0`) fails the conversion, a
    whitespace-only line inside the structure or a row without exactly 12 (10) values fails the
    shape check, and non-ASCII files and line breaks that only `str.splitlines` knows are never
    tried. Lines after the last frame are ignored, as the reference ignores them.
    """
    if not data.isascii() or any(mark in data for mark in _OTHER_LINE_BREAKS):
        return None  # the reference decides (decoding errors and odd line breaks included)
    lines = data.decode("ascii").splitlines()  # now \n, \r\n and \r only, like universal-newline text mode
    total = len(lines)

    def integer(index: int) -> int | None:
        if index >= total:
            return None
        parts = lines[index].split()
        if len(parts) != 1:
            return None
        try:
            return int(parts[0])
        except ValueError:
            return None

    num_frames = integer(0)
    if num_frames is None or num_frames < 0:
        return None
    index = 1
    counts: list[int] = []
    info_lines: list[str] = []
    joint_lines: list[str] = []
    for _ in range(num_frames):
        num_bodies = integer(index)
        if num_bodies is None or not 0 <= num_bodies <= MAX_BODIES:
            return None
        index += 1
        for _ in range(num_bodies):
            if index + 2 + NUM_JOINTS > total or integer(index + 1) != NUM_JOINTS:
                return None  # truncated, or a joint count the reference rejects
            info_lines.append(lines[index])
            joint_lines.extend(lines[index + 2 : index + 2 + NUM_JOINTS])
            index += 2 + NUM_JOINTS
        counts.append(num_bodies)
    try:
        body_ids = [int(line.split(None, 1)[0]) for line in info_lines]
        info = _rows(info_lines, BODY_INFO_FIELDS)
        joints = _rows(joint_lines, JOINT_FIELDS).reshape(len(info_lines), NUM_JOINTS, JOINT_FIELDS)
    except (ValueError, IndexError):
        return None
    frames: list[list[Body]] = []
    body = 0
    for count in counts:
        frames.append([Body(body_ids[b], info[b], joints[b]) for b in range(body, body + count)])
        body += count
    return SkeletonSequence(name, frames)


def _rows(lines: list[str], width: int) -> np.ndarray:
    """Lines of exactly `width` whitespace-separated floats as a (len(lines), width) array; ValueError otherwise."""
    if not lines:
        return np.zeros((0, width))
    # single spaces first (NTU's own files; a little faster), then any whitespace, as str.split
    for delimiter in (" ", None):
        try:
            rows = np.loadtxt(lines, dtype=np.float64, comments=None, ndmin=2, delimiter=delimiter)
        except ValueError:
            continue
        if rows.shape == (len(lines), width):
            return rows
    raise ValueError("a value float() might read differently, a blank row, or rows of another width")


def read_skeleton(path: str | Path) -> SkeletonSequence:
    """Read a `.skeleton` file from a local path (the fast reader; same result as `parse_skeleton`)."""
    return parse_skeleton_bytes(Path(path).read_bytes(), str(path))


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


def kinect_body(
    body_id: int, camera_xyz: np.ndarray, color_xy: np.ndarray, facing: int, lean_x: float, rng: np.random.Generator
) -> Body:
    """One body with NTU's columns from its 25 joints in camera metres (x right, y up) and colour pixels.

    For the synthetic datasets: the depth-image pixels follow from the camera coordinates (Kinect
    v2 depth intrinsics), the orientation is a yaw toward `facing` (+1 right, -1 left), and ~3 % of
    the distal joints are marked "inferred", as Kinect does.
    """
    X, Y, Z = camera_xyz[:, 0], camera_xyz[:, 1], camera_xyz[:, 2]
    depth = np.stack([DEPTH_CX + DEPTH_FOCAL * X / Z, DEPTH_CY - DEPTH_FOCAL * Y / Z], axis=1)
    yaw = 0.35 * facing
    orientation = np.tile([np.cos(yaw / 2), 0.0, np.sin(yaw / 2), 0.0], (NUM_JOINTS, 1))
    orientation[LEAF_JOINTS] = 0.0
    tracking = np.full(NUM_JOINTS, float(TRACKED))
    tracking[[j for j in DISTAL_JOINTS if rng.random() < 0.03]] = INFERRED
    joints = np.column_stack([X, Y, Z, depth, color_xy, orientation, tracking])
    info = np.array([float(body_id), 0, 1, 1, 1, 1, 0, lean_x, 0.0, TRACKED], dtype=float)
    return Body(body_id, info, joints)
