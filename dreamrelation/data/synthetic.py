"""A seeded synthetic NTU RGB+D-format dataset: the demo dataset and the test fixture.

Every clip shows two stick figures of clearly different colours on a lightly textured
background. The figures are drawn *from* their Kinect v2 skeletons (25 joints), so the
`colorX`/`colorY` columns of the written `.skeleton` files lie on the drawn pixels. How
the figures move depends on the relation (METHOD.md §8): walking towards each other, walking
apart, meeting hands, embracing, one striking and the other recoiling, pointing, following.

Layout under the dataset root, as in the real download:

    nturgb+d_rgb/<name>_rgb.avi          (or _rgb.mp4)
    nturgb+d_skeletons/<name>.skeleton
    masks/<name>_masks.npz               masks (T, 2, H, W) bool, body_ids (2,) int64
    synthetic_dataset.json               ownership stamp: written before the first file (the files
                                         about to be written) and last (config + clip list)

Masks are modal (what is visible): where the figures overlap, the front one owns the
pixels. `body_ids` follow the order of the bodies in every skeleton frame.

The world model is deliberately simple: each figure stands in a vertical plane at a fixed
depth facing the camera, limbs move in that plane (a 2-D "front view" puppet) and a pinhole
camera projects it. Arms and legs reach targets through two-link inverse kinematics.

One module (~800 lines) because it is one generator: the poses, the per-relation motions, the
drawing and the files share the scene model and change together.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from itertools import product
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

import cv2
import numpy as np
from pydantic import Field, field_validator, model_validator

from dreamrelation.configbase import StrictConfig
from dreamrelation.data.ntu import ClipName, DatasetFolderError, normalize_relation_id
from dreamrelation.data.skeleton import (
    COLOR_FOCAL_PER_WIDTH, KINECT_ID_BASE, NUM_JOINTS, Body, kinect_body, write_skeleton,
)
from dreamrelation.data.video import write_video
from dreamrelation.data.world import smoothstep
from dreamrelation.data.world_ntu import WORLD_ACTIONS, render_world_ntu_clip

GENERATOR_VERSION = 1
RGB_DIR, SKELETON_DIR, MASK_DIR = "nturgb+d_rgb", "nturgb+d_skeletons", "masks"
STAMP_NAME = "synthetic_dataset.json"

Fault = Literal["missing_skeleton", "single_body", "short"]
Style = Literal["puppet", "world"]

# Motion family and variant of each of the 26 two-person actions (METHOD.md §8).
RELATION_MOTIONS: dict[str, tuple[str, str]] = {
    "A050": ("strike", "punch"),
    "A051": ("strike", "kick"),
    "A052": ("strike", "push"),
    "A053": ("embrace", "pat"),
    "A054": ("point", "point"),
    "A055": ("embrace", "hug"),
    "A056": ("meet_hands", "give"),
    "A057": ("meet_hands", "pocket"),
    "A058": ("meet_hands", "shake"),
    "A059": ("approach", ""),
    "A060": ("apart", ""),
    "A106": ("strike", "hit"),
    "A107": ("strike", "stab"),
    "A108": ("strike", "knock"),
    "A109": ("meet_hands", "grab"),
    "A110": ("point", "shoot"),
    "A111": ("strike", "stomp"),
    "A112": ("meet_hands", "high_five"),
    "A113": ("meet_hands", "cheers"),
    "A114": ("meet_hands", "carry"),
    "A115": ("point", "photo"),
    "A116": ("follow", ""),
    "A117": ("embrace", "whisper"),
    "A118": ("meet_hands", "exchange"),
    "A119": ("embrace", "support"),
    "A120": ("meet_hands", "rps"),
}
# Any other action (single-person NTU actions) gets one of these, chosen by its number.
_FALLBACK = [
    ("approach", ""), ("apart", ""), ("meet_hands", "shake"), ("embrace", "hug"),
    ("strike", "push"), ("point", "point"), ("follow", ""),
]

# Kinect v2 joint indices.
SPINE_BASE, SPINE_MID, NECK, HEAD = 0, 1, 2, 3
SPINE_SHOULDER = 20
# Per side: shoulder, elbow, wrist, hand, hand tip, thumb, hip, knee, ankle, foot.
_LEFT = dict(shoulder=4, elbow=5, wrist=6, hand=7, tip=21, thumb=22, hip=12, knee=13, ankle=14, foot=15)
_RIGHT = dict(shoulder=8, elbow=9, wrist=10, hand=11, tip=23, thumb=24, hip=16, knee=17, ankle=18, foot=19)

# Body proportions as fractions of the figure's height u (front view, metres / u).
_HIP_Y = 0.53  # SpineBase above the floor
_TORSO = {  # (toward facing, up) relative to SpineBase; rotated by lean
    SPINE_MID: (0.0, 0.14), SPINE_SHOULDER: (0.0, 0.28), NECK: (0.0, 0.33), HEAD: (0.0, 0.40),
}
_SHOULDER = (0.11, 0.27)
_HIP = (0.07, -0.02)
_UPPER_ARM, _FOREARM, _HAND, _TIP, _THUMB = 0.17, 0.15, 0.05, 0.04, 0.035
_THIGH, _SHIN = 0.235, 0.235

# Camera: Kinect v2 colour focal length is ~1081 px for 1920 px; depth is 512x424, f ~365.


class SyntheticConfig(StrictConfig):
    """What to generate; the same config always gives the same dataset."""

    added_later: ClassVar[dict[str, Any]] = {"style": "puppet"}

    style: Style = Field(
        default="puppet",
        description="'puppet': 3-D stick-figure puppets of any NTU action (the plumbing demo). 'world': the toy "
        f"world's people doing the world relation of {', '.join(WORLD_ACTIONS)} (the toy-base demo; "
        "frames 6k+1, height and width multiples of 16).",
    )

    relations: list[str] = Field(
        default=["A058", "A055", "A112", "A052", "A059", "A060"],
        description="NTU action ids to generate clips for ('A058', '58' and 58 all work). "
        "The 26 two-person actions get their own motion; other ids borrow one.",
    )
    clips_per_relation: int = Field(default=6, ge=1, description="Well-formed clips per relation.")
    setups: list[int] = Field(
        default=[1, 2, 3, 18, 19, 20],
        description="Setup numbers to draw clip names from. Actions A001-A060 use setups <= 17 "
        "and A061-A120 setups >= 18 when the pool has any (as in NTU RGB+D 120).",
    )
    cameras: list[int] = Field(default=[1, 2, 3], description="Camera numbers (1-3) to draw clip names from.")
    performers: list[int] = Field(
        default=list(range(1, 9)), description="Performer numbers to draw clip names from."
    )
    replications: list[int] = Field(default=[1, 2], description="Replication numbers (1-2) to draw clip names from.")
    frames: int = Field(default=40, ge=2, description="Frames per well-formed clip.")
    fps: float = Field(default=30.0, gt=0, description="Frame rate of the written videos.")
    width: int = Field(default=320, ge=32, multiple_of=2, description="Video width in pixels (even).")
    height: int = Field(
        default=180, ge=32, multiple_of=2,
        description="Video height in pixels (even; 320x180 is 16:9 like NTU's 1920x1080).",
    )
    video_format: Literal["avi", "mp4"] = Field(
        default="avi",
        description="'avi' writes <name>_rgb.avi (Motion-JPEG, like NTU); 'mp4' writes <name>_rgb.mp4 (H.264).",
    )
    seed: int = Field(default=0, ge=0, description="Seed of every random choice (names, looks, motion).")
    masks: bool = Field(default=True, description="Also write ground-truth per-subject masks (masks/<name>_masks.npz).")
    missing_skeleton: int = Field(
        default=0, ge=0, description="Extra clips per relation whose .skeleton file is omitted."
    )
    single_body: int = Field(
        default=0, ge=0,
        description="Extra clips per relation whose skeleton tracks only one body in most frames "
        "(the second figure is lost after the first quarter; the video still shows both).",
    )
    short: int = Field(default=0, ge=0, description="Extra clips per relation with only `short_frames` frames.")
    short_frames: int = Field(default=10, ge=1, description="Frame count of the `short` clips (less than `frames`).")

    @field_validator("relations", mode="before")
    @classmethod
    def _check_relations(cls, value: object) -> list[str]:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"relations must be a list of action ids, got {value!r}")
        ids = [normalize_relation_id(v) for v in value]
        for rid in ids:
            if not (rid[:1] == "A" and rid[1:].isdigit() and 1 <= int(rid[1:]) <= 120):
                raise ValueError(f"relation {rid!r} is not an NTU action id A001-A120 (synthetic clips need NTU names)")
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate relation ids in {ids}")
        if not ids:
            raise ValueError("at least one relation is needed")
        return ids

    @model_validator(mode="after")
    def _check_pools(self) -> "SyntheticConfig":
        checks = [("setups", self.setups, 1, 999), ("cameras", self.cameras, 1, 3),
                  ("performers", self.performers, 1, 999), ("replications", self.replications, 1, 2)]
        for name, pool, low, high in checks:
            if not pool or any(not low <= v <= high for v in pool):
                raise ValueError(f"{name} must be a non-empty list of numbers in {low}-{high}, got {pool}")
        if self.style == "world":
            unknown = [r for r in self.relations if r not in WORLD_ACTIONS]
            if unknown:
                raise ValueError(f"style 'world' has no clips of {', '.join(unknown)}; its actions are "
                                 f"{', '.join(f'{a} ({r})' for a, r in WORLD_ACTIONS.items())}")
            if (self.frames - 1) % 6 or self.height % 16 or self.width % 16 or self.width < self.height:
                raise ValueError(f"style 'world' needs frames = 6k+1 and height, width multiples of 16 with "
                                 f"width >= height; got {self.frames} frames at {self.height}x{self.width}")
        if self.short and self.short_frames >= self.frames:
            raise ValueError(f"short_frames ({self.short_frames}) must be less than frames ({self.frames})")
        return self


@dataclass(frozen=True)
class SyntheticClip:
    """Paths of what was written for one clip; `skeleton` is None when it was omitted."""

    name: ClipName
    video: Path
    skeleton: Path | None
    masks: Path | None
    frames: int
    fault: Fault | None = None

    @property
    def relation(self) -> str:
        """The clip's relation id, e.g. 'A058'."""
        return self.name.relation


def motion_of(relation: str) -> tuple[str, str]:
    """(motion family, variant) drawn for a relation id, e.g. 'A059' -> ('approach', '')."""
    rid = normalize_relation_id(relation)
    if rid in RELATION_MOTIONS:
        return RELATION_MOTIONS[rid]
    return _FALLBACK[int(rid[1:]) % len(_FALLBACK)]


# --------------------------------------------------------------------------- geometry


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.hypot(v[0], v[1]))
    return v / n if n > 1e-9 else np.array([0.0, -1.0])


def _rotate(v: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _two_link(
    root: np.ndarray, target: np.ndarray, a: float, b: float, bend: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Middle and end joint of a two-link limb reaching for `target` (as far as it can).

    Of the two solutions, the middle joint (elbow/knee) goes to the side `bend` points to.
    """
    direction = _unit(target - root)
    r = float(np.clip(np.hypot(*(target - root)), abs(a - b) + 1e-6, a + b - 1e-6))
    alpha = float(np.arccos(np.clip((a * a + r * r - b * b) / (2 * a * r), -1.0, 1.0)))
    perp = np.array([-direction[1], direction[0]])
    sign = 1.0 if float(perp @ bend) >= 0 else -1.0
    middle = root + a * (np.cos(alpha) * direction + sign * np.sin(alpha) * perp)
    return middle, root + r * direction


# --------------------------------------------------------------------------- motion


class _Scene:
    """Clip-constant looks of the two figures plus their per-frame motion commands.

    Coordinates are world metres in the image plane: X to the image right, Y up from the
    floor. Figure 0 (A, the actor) starts on the `side` opposite to figure 1 (B): B lies in
    direction `side` from A. `facing[i]` is +1 (image right) or -1.
    """

    def __init__(self, rng: np.random.Generator, frames: int, width: int, height: int):
        self.t = np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)
        self.u = rng.uniform(1.55, 1.85, 2)
        near = rng.uniform(2.9, 3.4)
        self.z = np.array([near, near + rng.uniform(0.1, 0.3)])[rng.permutation(2)]
        self.cam_h = rng.uniform(0.9, 1.1)
        self.focal = COLOR_FOCAL_PER_WIDTH * min(width, height * 16 / 9)
        self.cx, self.cy = width / 2, height / 2
        self.side = int(rng.choice([-1, 1]))
        # Roots stay this far from the centre so that outstretched arms stay in the frame.
        self.half_width = float(min(self.z) * self.cx / self.focal) - 0.85
        self.x = np.zeros((2, frames))
        self.lean = np.zeros((2, frames))
        self.facing = np.array([self.side, -self.side])
        # (figure, limb) -> (targets (T, 2), weights (T,)); limbs: lead_arm, far_arm, lead_leg
        self.commands: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}

    @property
    def frames(self) -> int:
        return len(self.t)

    # -- anchors of a figure's torso (no limbs), used as targets by the other figure
    def torso(self, i: int, k: int) -> dict[str, np.ndarray]:
        """Torso joints of figure i at frame k in world metres, keyed by name."""
        u, f, lean = self.u[i], self.facing[i], self.lean[i, k]
        base = np.array([self.x[i, k], _HIP_Y * u])
        c, s = np.cos(lean), np.sin(lean)

        def at(h: float, v: float, rotate: bool = True) -> np.ndarray:
            if rotate:
                h, v = h * c + v * s, -h * s + v * c
            return base + u * np.array([f * h, v])

        points = {str(j): at(*hv) for j, hv in _TORSO.items()}
        return {
            "base": base, "belly": points[str(SPINE_MID)], "chest": points[str(SPINE_SHOULDER)],
            "neck": points[str(NECK)], "head": points[str(HEAD)],
            "lead_shoulder": at(_SHOULDER[0], _SHOULDER[1]), "far_shoulder": at(-_SHOULDER[0], _SHOULDER[1]),
            "lead_hip": at(_HIP[0], _HIP[1], False), "far_hip": at(-_HIP[0], _HIP[1], False),
        }

    def near(self, i: int, k: int, part: str, to: int) -> np.ndarray:
        """The `part` ('shoulder' or 'hip') of figure i on the side nearer to figure `to`."""
        torso = self.torso(i, k)
        lead, far = torso[f"lead_{part}"], torso[f"far_{part}"]
        return lead if abs(lead[0] - self.x[to, k]) <= abs(far[0] - self.x[to, k]) else far

    def away(self, i: int, k: int, part: str, to: int) -> np.ndarray:
        """The `part` of figure i on the side farther from figure `to`."""
        torso = self.torso(i, k)
        lead, far = torso[f"lead_{part}"], torso[f"far_{part}"]
        return far if abs(lead[0] - self.x[to, k]) <= abs(far[0] - self.x[to, k]) else lead

    def command(self, i: int, limb: str, target: Callable[[int], np.ndarray], weight: np.ndarray) -> None:
        """Move a limb of figure i towards target(k) with weight[k] (0 = relaxed, 1 = on target)."""
        self.commands[(i, limb)] = (np.array([target(k) for k in range(self.frames)]), np.asarray(weight, float))

    def walk_pair(self, rng: np.random.Generator, d0: float, d1: float, *, end: float, share: float,
                  towards: bool = True, start: float = 0.0) -> None:
        """Figures at distance d0 move (both, `share` of it by A) to distance d1 during [start, end]."""
        centre = rng.uniform(-0.15, 0.15)
        moved = (d0 - d1) * smoothstep(self.t, start, end)
        self.x[0] = centre - self.side * d0 / 2 + self.side * share * moved
        self.x[1] = centre + self.side * d0 / 2 - self.side * (1 - share) * moved
        self.facing = np.array([self.side, -self.side]) * (1 if towards else -1)


def _approach(s: _Scene, rng: np.random.Generator, variant: str) -> None:
    far = min(rng.uniform(2.6, 3.3), 2 * s.half_width - 0.3)
    s.walk_pair(rng, far, rng.uniform(0.7, 0.95), end=rng.uniform(0.75, 0.95), share=rng.uniform(0.35, 0.65))


def _apart(s: _Scene, rng: np.random.Generator, variant: str) -> None:
    far = min(rng.uniform(2.6, 3.3), 2 * s.half_width - 0.3)
    s.walk_pair(rng, rng.uniform(0.7, 0.95), far, end=rng.uniform(0.75, 0.95),
                share=rng.uniform(0.35, 0.65), towards=False, start=rng.uniform(0.0, 0.1))


# meet_hands variants: height of the meeting point relative to shoulders (metres), both
# arms of both figures?, one-sided target on B ("hip"/None).
_MEET = {
    "shake": (-0.22, False, None), "rps": (-0.2, False, None), "high_five": (0.33, False, None),
    "cheers": (0.15, False, None), "give": (-0.3, False, None), "exchange": (-0.28, False, None),
    "grab": (-0.3, False, None), "carry": (-0.3, True, None), "pocket": (0.0, False, "hip"),
}


def _meet_hands(s: _Scene, rng: np.random.Generator, variant: str) -> None:
    level, both_arms, on_body = _MEET.get(variant, _MEET["shake"])
    s.walk_pair(rng, rng.uniform(1.8, 2.3), rng.uniform(0.95, 1.12), end=rng.uniform(0.28, 0.36),
                share=rng.uniform(0.3, 0.7) if on_body is None else 0.9)
    start = rng.uniform(0.25, 0.32)
    weight = smoothstep(s.t, start, start + 0.16) * (1 - smoothstep(s.t, 0.8, 0.95))
    wiggle = {"shake": 0.03, "rps": 0.05, "cheers": 0.02}.get(variant, 0.0)

    def meeting(k: int) -> np.ndarray:
        a, b = s.near(0, k, "shoulder", 1), s.near(1, k, "shoulder", 0)
        y = (a[1] + b[1]) / 2 + level + wiggle * np.sin(2 * np.pi * 5 * s.t[k])
        return np.array([(a[0] + b[0]) / 2, y])

    if on_body == "hip":
        s.command(0, "lead_arm", lambda k: s.near(1, k, "hip", 0), weight)
        return
    for i in (0, 1):
        s.command(i, "lead_arm", meeting, weight)
        if both_arms:
            s.command(i, "far_arm", meeting, weight)


def _embrace(s: _Scene, rng: np.random.Generator, variant: str) -> None:
    mutual = variant == "hug"
    close = rng.uniform(0.42, 0.55) if mutual else rng.uniform(0.5, 0.62)
    s.walk_pair(rng, rng.uniform(1.5, 1.9), close, end=rng.uniform(0.38, 0.46),
                share=rng.uniform(0.35, 0.65) if mutual else 0.85)
    weight = smoothstep(s.t, 0.3, 0.5) * (1 - smoothstep(s.t, 0.88, 1.0) * (0.0 if mutual else 1.0))
    if mutual:
        for i, j in ((0, 1), (1, 0)):
            s.command(i, "lead_arm", lambda k, i=i, j=j: s.away(j, k, "shoulder", i) - [0, 0.05], weight)
            s.command(i, "far_arm", lambda k, i=i, j=j: s.away(j, k, "shoulder", i) - [0, 0.12], weight)
            s.lean[i] = 0.08 * weight
        return
    if variant == "whisper":
        s.lean[0] = 0.22 * weight
        s.command(0, "lead_arm", lambda k: (s.torso(0, k)["head"] + s.torso(1, k)["head"]) / 2 - [0, 0.04], weight)
    elif variant == "pat":
        pats = 0.05 * np.abs(np.sin(2 * np.pi * 3 * s.t))
        s.command(0, "lead_arm", lambda k: s.away(1, k, "shoulder", 0) + [0, pats[k]], weight)
    else:  # support: arm around B's shoulders, B leans on A
        s.lean[1] = 0.12 * weight
        s.command(0, "lead_arm", lambda k: s.away(1, k, "shoulder", 0), weight)
        s.command(0, "far_arm", lambda k: s.near(1, k, "shoulder", 0) - [0, 0.15], weight)


# strike variants: contact distance between roots, recoil distance of B, B's lean back.
_STRIKE = {
    "punch": (0.85, 0.45, 0.25), "push": (0.8, 0.6, 0.3), "hit": (0.8, 0.5, 0.3),
    "stab": (0.85, 0.5, 0.25), "knock": (0.55, 0.85, 0.45), "kick": (0.85, 0.55, 0.25),
    "stomp": (0.55, 0.3, 0.15),
}


def _strike(s: _Scene, rng: np.random.Generator, variant: str) -> None:
    contact, recoil, lean_back = _STRIKE.get(variant, _STRIKE["push"])
    d0 = rng.uniform(1.35, 1.6)
    recoil *= rng.uniform(0.85, 1.2)
    hit = rng.uniform(0.38, 0.46)
    centre = rng.uniform(-0.15, 0.15) - s.side * recoil / 2
    s.x[0] = centre - s.side * d0 / 2 + s.side * (d0 - contact) * smoothstep(s.t, 0.1, hit)
    s.x[1] = centre + s.side * d0 / 2 + s.side * recoil * smoothstep(s.t, hit, hit + 0.25)
    s.facing = np.array([s.side, -s.side])
    bump = smoothstep(s.t, hit - 0.02, hit + 0.08) * (1 - 0.6 * smoothstep(s.t, hit + 0.25, hit + 0.5))
    s.lean[1] = -lean_back * bump
    strike = smoothstep(s.t, hit - 0.15, hit) * (1 - smoothstep(s.t, hit + 0.15, hit + 0.35))
    # B shields: hands up in front of the chest after the contact.
    guard = 0.7 * smoothstep(s.t, hit, hit + 0.12) * (1 - smoothstep(s.t, hit + 0.4, hit + 0.55))
    for limb, dy in (("lead_arm", 0.0), ("far_arm", -0.08)):
        s.command(1, limb, lambda k, dy=dy: s.torso(1, k)["head"] + [s.facing[1] * 0.2, -0.12 + dy], guard)

    if variant in ("kick", "stomp"):
        if variant == "kick":
            target = lambda k: s.near(1, k, "hip", 0) - [0, 0.12]  # noqa: E731
        else:  # lift the foot, then bring it down on B's foot
            lift = 1 - smoothstep(s.t, hit - 0.06, hit)
            target = lambda k: np.array([s.near(1, k, "hip", 0)[0], 0.05 + 0.25 * lift[k]])  # noqa: E731
        s.command(0, "lead_leg", target, strike)
        s.lean[0] = -0.15 * strike
        return
    s.lean[0] = (0.25 if variant == "knock" else 0.08) * strike
    if variant == "punch":
        s.command(0, "lead_arm", lambda k: s.torso(1, k)["head"], strike)
    elif variant == "hit":  # raise overhead, then swing down onto B's shoulder
        swing = smoothstep(s.t, hit - 0.07, hit)
        s.command(0, "lead_arm", lambda k: (1 - swing[k]) * (s.torso(0, k)["lead_shoulder"] + [0.1 * s.facing[0], 0.5])
                  + swing[k] * s.near(1, k, "shoulder", 0), strike)
    elif variant == "stab":
        s.command(0, "lead_arm", lambda k: s.torso(1, k)["belly"], strike)
    else:  # push, knock: both hands on B's chest
        s.command(0, "lead_arm", lambda k: s.torso(1, k)["chest"], strike)
        s.command(0, "far_arm", lambda k: s.torso(1, k)["belly"], strike)


def _point(s: _Scene, rng: np.random.Generator, variant: str) -> None:
    d = rng.uniform(1.9, 2.4)
    s.walk_pair(rng, d, d - rng.uniform(0.0, 0.15), end=0.3, share=0.5)
    weight = smoothstep(s.t, rng.uniform(0.15, 0.25), 0.4) * (1 - smoothstep(s.t, 0.82, 0.97))
    if variant == "photo":  # camera in front of the face; B poses with a raised hand
        for limb, dx in (("lead_arm", 0.08), ("far_arm", -0.02)):
            s.command(0, limb, lambda k, dx=dx: s.torso(0, k)["head"] + [s.facing[0] * dx, -0.04], weight)
        s.command(1, "lead_arm", lambda k: s.torso(1, k)["lead_shoulder"] + [s.facing[1] * 0.15, 0.45], weight)
        return

    def aim(k: int, part: str = "head") -> np.ndarray:  # beyond reach: the arm points straight
        shoulder = s.torso(0, k)["lead_shoulder"]
        return shoulder + 2.0 * (s.torso(1, k)[part] - shoulder)

    s.command(0, "lead_arm", aim, weight)
    if variant == "shoot":
        s.command(0, "far_arm", lambda k: aim(k, "chest"), weight)
        hands_up = smoothstep(s.t, 0.45, 0.6) * (1 - smoothstep(s.t, 0.85, 1.0))
        for limb in ("lead_arm", "far_arm"):
            s.command(1, limb, lambda k, limb=limb: s.torso(1, k)[limb.replace("arm", "shoulder")]
                      + [s.facing[1] * (0.12 if limb == "lead_arm" else -0.12), 0.45], hands_up)


def _follow(s: _Scene, rng: np.random.Generator, variant: str) -> None:
    gap = rng.uniform(1.0, 1.3)
    travel = min(rng.uniform(1.2, 1.9), 2 * s.half_width - gap - 0.2)
    heading = -s.side  # A walks ahead, away from B; B follows
    p = np.clip((s.t - 0.05) / 0.9, 0.0, 1.0)
    base = rng.uniform(-0.1, 0.1) + heading * travel * (p - 0.5)
    s.x[0] = base + heading * gap / 2
    s.x[1] = base - heading * gap / 2 + heading * 0.08 * np.sin(np.pi * p)
    s.facing = np.array([heading, heading])


_FAMILIES: dict[str, Callable[[_Scene, np.random.Generator, str], None]] = {
    "approach": _approach, "apart": _apart, "meet_hands": _meet_hands, "embrace": _embrace,
    "strike": _strike, "point": _point, "follow": _follow,
}


# --------------------------------------------------------------------------- posing


def _pose(s: _Scene, i: int, k: int, walk: float, phase: float) -> np.ndarray:
    """World (X, Y) of the 25 joints of figure i at frame k."""
    u, f = s.u[i], int(s.facing[i])
    joints = np.zeros((NUM_JOINTS, 2))
    torso = s.torso(i, k)
    joints[SPINE_BASE], joints[SPINE_MID], joints[SPINE_SHOULDER] = torso["base"], torso["belly"], torso["chest"]
    joints[NECK], joints[HEAD] = torso["neck"], torso["head"]
    # Left joints are always on the image right (+X): the lead side is Left when facing +X.
    sides = {"lead": _LEFT if f > 0 else _RIGHT, "far": _RIGHT if f > 0 else _LEFT}
    for side, sign in (("lead", 1.0), ("far", -1.0)):
        ids = sides[side]
        outward = sign * f  # +X or -X: the side of the body this limb is on
        # Arm: relaxed hanging pose (swinging when walking), blended towards its target.
        shoulder = torso[f"{side}_shoulder"]
        swing = sign * 0.09 * u * np.sin(phase + np.pi) * walk
        relaxed = shoulder + np.array([outward * 0.05 * u + f * swing, -0.355 * u])
        target = relaxed
        if (i, f"{side}_arm") in s.commands:
            targets, weights = s.commands[(i, f"{side}_arm")]
            target = (1 - weights[k]) * relaxed + weights[k] * targets[k]
        elbow, hand = _two_link(shoulder, target, _UPPER_ARM * u, (_FOREARM + _HAND) * u,
                                np.array([0.3 * outward, -1.0]))
        forearm = _unit(hand - elbow)
        wrist = elbow + forearm * _FOREARM * u
        up = 1.0 if _rotate(forearm, 0.7)[1] >= _rotate(forearm, -0.7)[1] else -1.0
        for part, point in (("shoulder", shoulder), ("elbow", elbow), ("wrist", wrist), ("hand", hand)):
            joints[ids[part]] = point
        joints[ids["tip"]] = hand + forearm * _TIP * u
        joints[ids["thumb"]] = wrist + _rotate(forearm, up * 0.7) * (_HAND + _THUMB) / 1.6 * u
        # Leg: stepping when walking, or reaching a target (kick, stomp).
        hip = torso[f"{side}_hip"]
        leg_phase = phase + (0.0 if side == "lead" else np.pi)
        ankle_target = np.array([hip[0] + outward * 0.02 * u + f * 0.16 * u * np.sin(leg_phase) * walk,
                                 (0.04 + 0.05 * max(0.0, np.cos(leg_phase)) * walk) * u])
        if (i, f"{side}_leg") in s.commands:
            targets, weights = s.commands[(i, f"{side}_leg")]
            ankle_target = (1 - weights[k]) * ankle_target + weights[k] * targets[k]
        knee, ankle = _two_link(hip, ankle_target, _THIGH * u, _SHIN * u, np.array([f, 0.0]))
        joints[ids["hip"]], joints[ids["knee"]], joints[ids["ankle"]] = hip, knee, ankle
        joints[ids["foot"]] = ankle + np.array([f * 0.06 * u, -0.03 * u])
    return joints


def _gait(x: np.ndarray, fps: float, phase0: float) -> tuple[np.ndarray, np.ndarray]:
    """Walking amount (0-1) and gait phase per frame from a root trajectory."""
    step = np.abs(np.diff(x, prepend=x[:1]))
    speed = np.convolve(np.pad(step * fps, 1, mode="edge"), np.ones(3) / 3, mode="valid")
    walk = np.clip(speed / 0.6, 0.0, 1.0)
    return walk, phase0 + np.cumsum(step) * 2 * np.pi / 1.3


# --------------------------------------------------------------------------- drawing


def _background(rng: np.random.Generator, height: int, width: int, horizon: float) -> np.ndarray:
    """A plain wall over a darker floor with faint smooth texture, RGB uint8."""
    wall = rng.uniform(180, 215) + rng.uniform(-8, 8, 3)
    floor = wall * rng.uniform(0.68, 0.8)
    rows = (np.arange(height) >= horizon)[:, None, None]
    image = np.where(rows, floor, wall) * np.ones((height, width, 3))
    image *= 1.0 + 0.06 * (np.arange(height)[:, None, None] / height - 0.5)
    noise = rng.normal(0, 1, (height // 24 + 2, width // 24 + 2)).astype(np.float32)
    image += 5.0 * cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)[:, :, None]
    return np.clip(image, 0, 255).astype(np.uint8)


_BONES = [
    (SPINE_SHOULDER, NECK), (NECK, HEAD), (SPINE_SHOULDER, 4), (SPINE_SHOULDER, 8), (SPINE_BASE, 12), (SPINE_BASE, 16),
    (4, 5), (5, 6), (6, 7), (8, 9), (9, 10), (10, 11),
    (12, 13), (13, 14), (14, 15), (16, 17), (17, 18), (18, 19),
]
_FINGERS = [(7, 21), (6, 22), (11, 23), (10, 24)]
_SHIFT = 4  # sub-pixel bits for cv2 drawing


def _draw_figure(canvas: np.ndarray, xy: np.ndarray, pixels_per_metre: float, u: float) -> None:
    """Draw a stick figure (value 255) from joint pixels xy (25, 2) onto a uint8 canvas."""

    fixed = np.round(xy * (1 << _SHIFT)).astype(int).tolist()

    def p(j: int) -> tuple[int, int]:
        return fixed[j][0], fixed[j][1]

    size = lambda metres, least: max(least, int(round(metres * u * pixels_per_metre)))  # noqa: E731
    limb, torso, finger = size(0.055, 2), size(0.12, 3), size(0.025, 2)
    for a, b in ((SPINE_BASE, SPINE_MID), (SPINE_MID, SPINE_SHOULDER)):
        cv2.line(canvas, p(a), p(b), 255, torso, cv2.LINE_8, _SHIFT)
    for a, b in _BONES:
        cv2.line(canvas, p(a), p(b), 255, limb, cv2.LINE_8, _SHIFT)
    for a, b in _FINGERS:
        cv2.line(canvas, p(a), p(b), 255, finger, cv2.LINE_8, _SHIFT)
    dot = max(2, limb // 2 + 1)
    for j in range(NUM_JOINTS):
        cv2.circle(canvas, p(j), dot << _SHIFT, 255, -1, cv2.LINE_8, _SHIFT)
    cv2.circle(canvas, p(HEAD), size(0.07, 3) << _SHIFT, 255, -1, cv2.LINE_8, _SHIFT)


# --------------------------------------------------------------------------- clips


def _body(
    s: _Scene, i: int, k: int, body_id: int, world: np.ndarray, rng: np.random.Generator
) -> tuple[Body, np.ndarray]:
    """Skeleton body (NTU values) of figure i at frame k from world joints, and its colour pixels (25, 2)."""
    X, Y, Z = world[:, 0], world[:, 1] - s.cam_h, np.full(NUM_JOINTS, s.z[i])
    color = np.stack([s.cx + s.focal * X / Z, s.cy - s.focal * Y / Z], axis=1)
    lean_x = float(np.clip(s.facing[i] * s.lean[i, k] * 2, -1, 1))
    return kinect_body(body_id, np.column_stack([X, Y, Z]), color, int(s.facing[i]), lean_x, rng), color


def clip_paths(root: str | Path, clip: ClipName, video_format: str = "avi") -> tuple[Path, Path, Path]:
    """Where a clip's video, skeleton and masks go under a dataset root."""
    root = Path(root)
    name = str(clip)
    return (root / RGB_DIR / f"{name}_rgb.{video_format}", root / SKELETON_DIR / f"{name}.skeleton",
            root / MASK_DIR / f"{name}_masks.npz")


def _render_puppets(
    clip: ClipName, frames: int, fps: float, width: int, height: int, seed: int, bodies: int
) -> tuple[np.ndarray, np.ndarray, list[list[Body]], np.ndarray]:
    """(video, masks, skeleton frames, body ids) of one clip of 3-D puppets (style 'puppet')."""
    rng = np.random.default_rng([seed, clip.setup, clip.camera, clip.performer, clip.replication, clip.action])
    family, variant = motion_of(clip.relation)
    scene = _Scene(rng, frames, width, height)
    _FAMILIES[family](scene, rng, variant)

    ids = KINECT_ID_BASE + rng.choice(100000, size=2, replace=False)
    colors = np.array([[205, 55, 45], [45, 90, 210]]) + rng.integers(-20, 21, (2, 3))
    horizon = scene.cy + scene.focal * scene.cam_h / 6.0
    background = _background(rng, height, width, horizon)
    gaits = [_gait(scene.x[i], fps, rng.uniform(0, 2 * np.pi)) for i in (0, 1)]
    order = np.argsort(-scene.z)  # far figure first
    keep_second = max(1, frames // 4) if bodies == 1 else frames

    video = np.empty((frames, height, width, 3), np.uint8)
    all_masks = np.zeros((frames, 2, height, width), bool)
    skeleton_frames: list[list[Body]] = []
    for k in range(frames):
        frame_bodies: list[Body] = []
        canvas = np.zeros((2, height, width), np.uint8)
        for i in (0, 1):
            world = _pose(scene, i, k, gaits[i][0][k], gaits[i][1][k])
            body, color_xy = _body(scene, i, k, int(ids[i]), world, rng)
            if i == 0 or k < keep_second:
                frame_bodies.append(body)
            _draw_figure(canvas[i], color_xy, scene.focal / scene.z[i], scene.u[i])
        skeleton_frames.append(frame_bodies)
        image = background.copy()
        visible = np.zeros((height, width), bool)
        for i in order[::-1]:  # front figure first: it owns overlapping pixels
            all_masks[k, i] = (canvas[i] > 0) & ~visible
            visible |= all_masks[k, i]
        for i in (0, 1):
            image[all_masks[k, i]] = colors[i]
        video[k] = image
    return video, all_masks, skeleton_frames, ids


def generate_clip(
    root: str | Path,
    clip: ClipName,
    *,
    frames: int = 40,
    fps: float = 30.0,
    width: int = 320,
    height: int = 180,
    seed: int = 0,
    bodies: int = 2,
    masks: bool = True,
    skeleton: bool = True,
    video_format: Literal["avi", "mp4"] = "avi",
    style: Style = "puppet",
) -> SyntheticClip:
    """Render one clip of `clip.relation` and write its video, skeleton and masks.

    `style` 'puppet' draws the 3-D puppets of this module; 'world' the toy world's stick-figure
    people (`data/world_ntu.py`).

    `bodies` is how many bodies the skeleton tracks in most frames: 2, or 1 (the second
    figure is lost after the first quarter of the clip; the video still shows both).
    `skeleton=False` omits the .skeleton file. Output depends only on the arguments.
    """
    if bodies not in (1, 2):
        raise ValueError(f"bodies must be 1 or 2, got {bodies}")
    if style == "world":
        video, all_masks, skeleton_frames, ids = render_world_ntu_clip(
            clip, frames=frames, width=width, height=height, seed=seed, bodies=bodies
        )
    else:
        video, all_masks, skeleton_frames, ids = _render_puppets(clip, frames, fps, width, height, seed, bodies)

    video_path, skeleton_path, mask_path = clip_paths(root, clip, video_format)
    write_video(video_path, video, fps)
    if skeleton:
        skeleton_path.parent.mkdir(parents=True, exist_ok=True)
        write_skeleton(skeleton_path, skeleton_frames)
    elif skeleton_path.exists():
        skeleton_path.unlink()
    if masks:
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = mask_path.with_name(f".{mask_path.name}.partial")
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, masks=all_masks, body_ids=ids.astype(np.int64))
        os.replace(tmp, mask_path)
    return SyntheticClip(clip, video_path, skeleton_path if skeleton else None, mask_path if masks else None, frames)


# --------------------------------------------------------------------------- datasets


def plan_dataset(config: SyntheticConfig) -> list[tuple[ClipName, Fault | None]]:
    """Clip names (and the fault of each extra clip) a config generates, in a fixed order."""
    planned: list[tuple[ClipName, Fault | None]] = []
    faults: list[Fault | None] = (
        [None] * config.clips_per_relation + ["missing_skeleton"] * config.missing_skeleton
        + ["single_body"] * config.single_body + ["short"] * config.short
    )
    for relation in config.relations:
        action = int(relation[1:])
        setups = [s for s in config.setups if (s <= 17) == (action <= 60)] or config.setups
        combos = list(product(sorted(set(setups)), sorted(set(config.cameras)),
                              sorted(set(config.performers)), sorted(set(config.replications))))
        if len(faults) > len(combos):
            raise ValueError(
                f"{relation}: {len(faults)} clips asked for but the setup/camera/performer/replication "
                f"pools give only {len(combos)} distinct names; widen the pools"
            )
        rng = np.random.default_rng([config.seed, action])
        chosen = [combos[j] for j in rng.permutation(len(combos))[: len(faults)]]
        for (setup, camera, performer, replication), fault in zip(chosen, faults):
            planned.append((ClipName(setup, camera, performer, replication, action), fault))
    return planned


def _expected(root: Path, config: SyntheticConfig) -> list[SyntheticClip]:
    clips = []
    for name, fault in plan_dataset(config):
        video, skeleton, masks = clip_paths(root, name, config.video_format)
        frames = config.short_frames if fault == "short" else config.frames
        clips.append(SyntheticClip(name, video, None if fault == "missing_skeleton" else skeleton,
                                   masks if config.masks else None, frames, fault))
    return clips


def _read_stamp(path: Path) -> dict | None:
    try:
        stamp = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) and stamp.get("generator") is not None else None


def _write_stamp(path: Path, stamp: dict) -> None:
    tmp = path.with_name(f".{STAMP_NAME}.partial")
    tmp.write_text(json.dumps(stamp, indent=1))
    os.replace(tmp, path)


def _claim_root(root: Path, create: bool) -> None:
    """Make sure `root` is a folder the generator may own: new (when `create`) or empty."""
    if not root.exists():
        if not create:
            raise DatasetFolderError(
                f"dataset root {root} does not exist. For a synthetic dataset, create it as an empty folder "
                "first; for real data set `synthetic: null` (e.g. -c mochi-1) and check the path"
            )
        root.mkdir(parents=True)
    elif not root.is_dir():
        raise DatasetFolderError(f"dataset root {root} is a file, not a folder")
    else:
        foreign = sorted(p.name for p in root.iterdir())
        if foreign:
            raise DatasetFolderError(
                f"dataset root {root} holds files the synthetic generator did not write ({', '.join(foreign[:3])}"
                f"{', ...' if len(foreign) > 3 else ''}); refusing to write synthetic clips into it. "
                "To train on the clips in it, turn the generator off (`synthetic: null`, or -c mochi-1); "
                "for a synthetic dataset, point select.dataset_root at an empty or new folder"
            )


def generate_dataset(root: str | Path, config: SyntheticConfig | None = None, create: bool = True) -> list[SyntheticClip]:
    """Write the whole dataset under `root`, or return at once when it is already complete.

    The generator writes only into a folder it owns: one holding its stamp file, an empty
    folder, or a new one (created only when `create`; the pipeline allows that for the demo's
    own default location alone). Ownership is stamped before the first clip is written, listing
    every file the generator is about to write, so an interrupted run can be resumed. It never
    overwrites or removes a file it did not write. Complete means: the stamp holds this exact
    config, says complete, and every file is present; otherwise the files listed by an older
    stamp are removed and all is regenerated.
    """
    root = Path(root)
    config = config or SyntheticConfig()
    clips = _expected(root, config)
    stamp_path = root / STAMP_NAME
    stamp = _read_stamp(stamp_path)
    wanted = {"generator": GENERATOR_VERSION, "config": config.model_dump(mode="json"), "complete": True}
    if stamp and {k: stamp.get(k) for k in wanted} == wanted and all(
        p.exists() for c in clips for p in (c.video, c.skeleton, c.masks) if p is not None
    ):
        return clips
    if stamp is None:
        _claim_root(root, create)

    ours = set((stamp or {}).get("files", []))
    files = [str(p.relative_to(root)) for c in clips for p in (c.video, c.skeleton, c.masks) if p is not None]
    foreign = [f for f in files if f not in ours and (root / f).exists()]
    if foreign:
        raise DatasetFolderError(
            f"synthetic dataset {root}: {foreign[0]} exists but was not written by the generator; "
            "refusing to overwrite it (move it away, or use another folder)"
        )
    _write_stamp(stamp_path, {"generator": GENERATOR_VERSION, "complete": False, "files": sorted(ours | set(files))})
    for old in sorted(ours - set(files)):
        (root / old).unlink(missing_ok=True)
    for clip in clips:
        written = generate_clip(
            root, clip.name, frames=clip.frames, fps=config.fps, width=config.width, height=config.height,
            seed=config.seed, bodies=1 if clip.fault == "single_body" else 2, masks=config.masks,
            skeleton=clip.fault != "missing_skeleton", video_format=config.video_format, style=config.style,
        )
        assert replace(written, fault=clip.fault) == clip
    _write_stamp(stamp_path, {**wanted, "clips": [[str(c.name), c.fault] for c in clips], "files": files})
    return clips
