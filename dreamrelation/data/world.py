"""The relational toy world (issue 13 §1): two-subject videos with independent controls.

A clip shows two subjects on a plain or lightly textured background. Each subject has a
*kind* (its shape: the stick-figure person and five others), a *contrast* (darker or lighter
than the background), a *colour* from a small palette and a size. The two subjects move
according to one *relation* from a small motion vocabulary (approach, move apart, push,
follow, shake hands, hug, orbit), with seeded random speeds, distances, timings and layout.

Why these attributes (issue 13 §2): the stock `AutoencoderKLMochi` normalises each frame with
32-group norms, which at 32 channels act like per-channel instance norms and wash out colour.
What survives such a normalisation is spatial structure: the *shape* of a subject and the
*sign* of its contrast with the background. So the kind is the primary category (the paper's
claim is person -> other categories), the contrast sign is second (every sampled clip has one
dark and one light subject, which also keeps the two apart when they touch), colour is a bonus.
Every subject colour has the same luminance per contrast (dark ~60, light ~200) and the
background lies in between (112-140), so the sign holds for every colour.

Relations are designed to be told apart at the temporal resolution of the causal VAE (6 pixel
frames per latent frame, METHOD.md §1): phases last a quarter of the clip or more and nothing
depends on frame-to-frame jitter.

Conventions: subject 0 is the actor, the grammatical subject of the caption ("A dark red
triangle is pushing a light blue circle."); trajectories are the (x, y) pixel centres of the
subjects' bounding boxes (rest pose); masks are modal (the front subject owns overlapping
pixels). Everything random comes from `ClipSpec.seed` (rendering) or the `seed` given to
`sample_specs` (which clips), so a spec and a config always render the same clip.

World v2 (issue 21 §1; `WorldConfig.version = 2`, made by `world_v2()`) gives every clip
attributes a tiny base can draw from text, each named in a pretraining caption with probability
`name_probability`: a *scene* (plain, vertical stripes, a checkerboard or a split background,
structures of 16-pixel bands that the 8x VAE keeps), a *body* (tall, wide or round silhouettes:
v2's kinds, shared by both subjects) and a *scale* (small or big). It adds a target relation
whose dynamics change the frame's spatial mean (`loom`: the actor grows as it approaches), meant
to give RCL's anchors (METHOD.md §4) signal; measured, too little at the toy's latent size
(docs/study.md R4). Captions read "A big dark tall figure is looming over
a big light tall figure on a checkered background."; an unnamed attribute is left out. Version 1
clips, captions and keys are unchanged.

Plain Python (numpy + cv2); no model code, no Prefect. One module because it is one thing, the
world: its vocabulary, sampling, motion, drawing and dataset files change together (a new
relation touches the vocabulary, a motion function and nothing else).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import cv2
import numpy as np
from pydantic import ConfigDict, Field, field_validator, model_validator

from dreamrelation.configbase import StrictConfig
from dreamrelation.data.ntu import DatasetFolderError
from dreamrelation.data.video import FrameCount, FrameSide, write_video

WORLD_VERSION = 1  # the default world; version 2 (issue 21) is WorldConfig.version = 2
INDEX_NAME = "world_index.json"
VIDEO_DIR, CAPTION_DIR, CLIP_DIR = "videos", "captions", "clips"

Contrast = Literal["dark", "light"]
CONTRASTS: tuple[Contrast, Contrast] = ("dark", "light")
LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luma weights
DARK_LUMA, LIGHT_LUMA = 60.0, 200.0
_SHIFT = 4  # sub-pixel bits for cv2 drawing
_MARGIN = 1.0  # pixels kept free between a subject's box and the frame border


def smoothstep(t: np.ndarray, start: float, end: float) -> np.ndarray:
    """Smoothstep from 0 (t <= start) to 1 (t >= end): the ease of every world and synthetic motion."""
    p = np.clip((t - start) / max(end - start, 1e-9), 0.0, 1.0)
    return p * p * (3 - 2 * p)


# --------------------------------------------------------------------------- vocabulary


@dataclass(frozen=True)
class Relation:
    """A relation of the motion vocabulary: slug, caption verb phrase and what it looks like."""

    slug: str
    verb: str
    motion: str


@dataclass(frozen=True)
class Kind:
    """A subject kind: slug, caption noun, and half extents (x, y) as multiples of the size."""

    slug: str
    noun: str
    half_width: float
    half_height: float


RELATIONS: dict[str, Relation] = {
    r.slug: r
    for r in (
        Relation("approach", "is approaching", "both walk towards each other and stop short of touching"),
        Relation("apart", "is moving away from", "from close together, both walk away from each other"),
        Relation("push", "is pushing", "the actor walks up to the other, touches it, the other recoils"),
        Relation("follow", "is following", "both travel the same way, the actor behind with a lag"),
        Relation("shake_hands", "is shaking hands with", "both meet, stay in contact a while, then part"),
        Relation("hug", "is hugging", "both meet, overlap a little and stay together to the end"),
        Relation("orbit", "is circling around", "the actor goes once around the other, which stays put"),
    )
}

KINDS: dict[str, Kind] = {
    k.slug: k
    for k in (
        Kind("person", "person", 0.38, 0.64),
        Kind("circle", "circle", 0.51, 0.51),
        Kind("square", "square", 0.46, 0.46),
        Kind("triangle", "triangle", 0.56, 0.49),
        Kind("star", "star", 0.60, 0.575),
        Kind("dog", "dog", 0.62, 0.42),
    )
}

#: World v2's target whose dynamics move the frame's spatial mean (issue 21 §1; too little for RCL: docs/study.md R4).
LOOM = Relation("loom", "is looming over", "the actor walks up to the other, growing to 1.6x its size; the other stays")
#: Every relation of either world version (v1 pools may not use `loom`).
ALL_RELATIONS: dict[str, Relation] = {**RELATIONS, LOOM.slug: LOOM}

#: World v2's kinds: body silhouettes (filled ellipses of about equal area) the base can draw.
BODIES: dict[str, Kind] = {
    k.slug: k
    for k in (
        Kind("tall", "tall figure", 0.28, 0.62),
        Kind("wide", "wide figure", 0.62, 0.28),
        Kind("round", "round figure", 0.42, 0.42),
    )
}
ALL_KINDS: dict[str, Kind] = {**KINDS, **BODIES}
BODY_NOUN = "figure"  # a v2 subject whose body the caption leaves unnamed

#: World v2's scenes: background structure with 16-pixel bands (two latent cells of the 8x VAE).
SCENES = ("plain", "stripes", "checkerboard", "split")
SCENE_WORDS = {"plain": "plain", "stripes": "striped", "checkerboard": "checkered", "split": "split"}
SCENE_LOW, SCENE_HIGH = 112.0, 140.0  # the two grey levels of a structured scene (mid-grey luma)
SCENE_BAND = 16  # pixels per stripe / checker cell
#: World v2's scales: glyph size ranges (fraction of the frame height) of small and big subjects.
SCALES: dict[str, tuple[float, float]] = {"small": (0.22, 0.26), "big": (0.34, 0.38)}
LOOM_GROWTH = 1.6
#: Clip attributes a v2 caption may name.
NAMEABLE = ("scene", "body", "scale")

# Saturated base hues; the dark and light variants are derived with fixed luminance.
_HUES: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40), "orange": (240, 140, 20), "yellow": (240, 220, 30),
    "green": (40, 180, 60), "blue": (40, 90, 230), "purple": (150, 60, 200),
}


def _variant(rgb: tuple[int, int, int], contrast: Contrast) -> tuple[int, int, int]:
    """The hue scaled to luminance DARK_LUMA (dark) or blended with white to LIGHT_LUMA (light)."""
    base = np.asarray(rgb, float)
    luma = float(base @ LUMA)
    if contrast == "dark" or luma >= LIGHT_LUMA:
        out = base * ((DARK_LUMA if contrast == "dark" else LIGHT_LUMA) / luma)
    else:
        out = base + (LIGHT_LUMA - luma) / (255.0 - luma) * (255.0 - base)
    return tuple(int(v) for v in np.clip(np.round(out), 0, 255))  # type: ignore[return-value]


#: colour name -> {"dark": rgb, "light": rgb}
PALETTE: dict[str, dict[Contrast, tuple[int, int, int]]] = {
    name: {c: _variant(rgb, c) for c in CONTRASTS} for name, rgb in _HUES.items()
}


def luma(rgb: Sequence[float] | np.ndarray) -> np.ndarray | float:
    """BT.601 luminance of RGB values (last axis)."""
    return np.asarray(rgb, float) @ LUMA


# --------------------------------------------------------------------------- specs and config


class SubjectSpec(StrictConfig):
    """One subject's looks: kind (primary), contrast sign, colour, size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(description=f"Subject kind (shape), one of {', '.join(KINDS)}; in world v2 a body, "
                      f"one of {', '.join(BODIES)}.")
    contrast: Contrast = Field(description="'dark' (darker than the background) or 'light' (lighter).")
    colour: str = Field(description=f"Palette colour, one of {', '.join(_HUES)}.")
    size: float = Field(gt=0.05, lt=0.6, description="Glyph size as a fraction of the frame height.")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in ALL_KINDS:
            raise ValueError(f"unknown kind {value!r}; kinds are {', '.join(ALL_KINDS)}")
        return value

    @field_validator("colour")
    @classmethod
    def _known_colour(cls, value: str) -> str:
        if value not in PALETTE:
            raise ValueError(f"unknown colour {value!r}; colours are {', '.join(PALETTE)}")
        return value

    @property
    def rgb(self) -> tuple[int, int, int]:
        """The RGB value the subject is drawn with."""
        return PALETTE[self.colour][self.contrast]

    def phrase(self, contrast: bool = True, colour: bool = True, kind: bool = True) -> str:
        """Noun phrase without article, e.g. 'dark red triangle' ('dark figure' for an unnamed v2 body)."""
        noun = ALL_KINDS[self.kind].noun if kind else BODY_NOUN
        return " ".join(([self.contrast] if contrast else []) + ([self.colour] if colour else []) + [noun])


class ClipSpec(StrictConfig):
    """What one clip shows. Subject 0 is the actor; `seed` drives all of the clip's randomness."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    added_later: ClassVar[dict[str, Any]] = {"scene": None, "scale": None, "named": None}

    relation: str = Field(description=f"Relation slug, one of {', '.join(ALL_RELATIONS)}.")
    subjects: tuple[SubjectSpec, SubjectSpec] = Field(description="The actor (0) and the other subject (1).")
    seed: int = Field(ge=0, description="Seed of the clip's motion, layout and background.")
    scene: str | None = Field(None, description=f"World v2: the background, one of {', '.join(SCENES)}.")
    scale: str | None = Field(None, description=f"World v2: both subjects' size class, one of {', '.join(SCALES)}.")
    named: tuple[str, ...] | None = Field(
        None, description=f"World v2: the clip attributes its caption names, from {', '.join(NAMEABLE)}."
    )

    @field_validator("relation")
    @classmethod
    def _known_relation(cls, value: str) -> str:
        if value not in ALL_RELATIONS:
            raise ValueError(f"unknown relation {value!r}; relations are {', '.join(ALL_RELATIONS)}")
        return value

    @model_validator(mode="after")
    def _known_attributes(self) -> ClipSpec:
        if self.scene is not None and self.scene not in SCENES:
            raise ValueError(f"unknown scene {self.scene!r}; scenes are {', '.join(SCENES)}")
        if self.scale is not None and self.scale not in SCALES:
            raise ValueError(f"unknown scale {self.scale!r}; scales are {', '.join(SCALES)}")
        if self.named is not None and not set(self.named) <= set(NAMEABLE):
            raise ValueError(f"named must be a subset of {', '.join(NAMEABLE)}, got {self.named}")
        return self

    @property
    def body(self) -> str:
        """The actor's kind (in world v2 both subjects share this body)."""
        return self.subjects[0].kind


class WorldConfig(StrictConfig):
    """Clip format and the pools `sample_specs` draws from (issue 13 §1; version 2: issue 21 §1)."""

    added_later: ClassVar[dict[str, Any]] = {"version": 1, "scenes": list(SCENES), "name_probability": 0.7}

    frames: FrameCount = Field(25, description="Frames per clip; 6k+1 for the causal VAE (25 -> 5 latent frames).")
    height: FrameSide = Field(64, description="Frame height in pixels (multiple of 16; 64 -> 8 latent rows).")
    width: FrameSide = Field(
        96, description="Frame width in pixels (multiple of 16, >= height; 96 -> 12 latent columns)."
    )
    fps: float = Field(12.0, gt=0, description="Frame rate written into the video files (the motion is per frame).")
    relations: list[str] = Field(default=list(RELATIONS), description="Relations `sample_specs` draws from by default.")
    kinds: list[str] = Field(default=list(KINDS), description="Subject kinds `sample_specs` draws from by default.")
    colours: list[str] = Field(default=list(PALETTE), description="Palette colours `sample_specs` draws from.")
    size_range: tuple[float, float] = Field(
        (0.24, 0.34), description="Glyph sizes (fraction of frame height) are drawn uniformly from [min, max]."
    )
    background_luma: tuple[float, float] = Field(
        (112.0, 140.0),
        description=f"Background luminance range; must lie between the dark ({DARK_LUMA:.0f}) "
        f"and light ({LIGHT_LUMA:.0f}) subject luminance with a margin of 40.",
    )
    texture_probability: float = Field(0.5, ge=0, le=1, description="Chance that a background is lightly textured.")
    texture_strength: float = Field(4.0, ge=0, le=12, description="Grey levels of the smooth background texture.")
    gait: bool = Field(True, description="Swing the legs of persons and dogs while they move.")
    caption_contrast: bool = Field(True, description="Name the contrast ('dark'/'light') in captions.")
    caption_colour: bool = Field(True, description="Name the colour in captions.")
    video_format: Literal["mp4", "avi"] = Field("mp4", description="Video files: H.264 .mp4 or Motion-JPEG .avi.")
    store_frames: bool = Field(True, description="Also store the lossless uint8 frames in each clip's .npz.")
    seed: int = Field(0, ge=0, description="Default seed of `sample_specs` (which clips are drawn).")
    version: Literal[1, 2] = Field(
        1, description="World version: 1 (kinds as glyphs on plain backgrounds) or 2 (scenes, bodies, scales and "
        "the loom relation, issue 21; `world_v2()` gives its defaults).",
    )
    scenes: list[str] = Field(default=list(SCENES), description=f"World v2: scenes drawn from, of {', '.join(SCENES)}.")
    name_probability: float = Field(
        0.7, ge=0, le=1, description="World v2: chance that a caption names each of scene, body and scale."
    )

    @field_validator("relations", "kinds", "colours", "scenes")
    @classmethod
    def _known_names(cls, value: list[str], info) -> list[str]:
        known = {"relations": ALL_RELATIONS, "kinds": ALL_KINDS, "colours": PALETTE, "scenes": SCENES}[info.field_name]
        unknown = [v for v in value if v not in known]
        if unknown or not value or len(set(value)) != len(value):
            raise ValueError(f"{info.field_name} must be distinct names from {', '.join(known)}; got {value}")
        return value

    @model_validator(mode="after")
    def _version_pools(self) -> WorldConfig:
        kinds, relations = (KINDS, RELATIONS) if self.version == 1 else (BODIES, ALL_RELATIONS)
        wrong = [k for k in self.kinds if k not in kinds] + [r for r in self.relations if r not in relations]
        if wrong:
            raise ValueError(f"world version {self.version} has no {', '.join(wrong)}: its kinds are "
                             f"{', '.join(kinds)} and its relations {', '.join(relations)}")
        return self

    @model_validator(mode="after")
    def _check_ranges(self) -> WorldConfig:
        low, high = self.size_range
        if not 0.1 <= low <= high <= 0.45:
            raise ValueError(f"size_range must satisfy 0.1 <= min <= max <= 0.45, got {self.size_range}")
        dark, light = self.background_luma
        if not DARK_LUMA + 40 <= dark <= light <= LIGHT_LUMA - 40:
            raise ValueError(
                f"background_luma must lie within [{DARK_LUMA + 40}, {LIGHT_LUMA - 40}], got {self.background_luma}"
            )
        if self.width < self.height:
            raise ValueError(f"width ({self.width}) must be >= height ({self.height}): relations play out left-right")
        return self


def world_v2(**overrides: Any) -> WorldConfig:
    """World v2's defaults (issue 21 §1): bodies, every scene and relation (loom included), captions
    that name the contrast but not the colour (the VAE does not keep colour)."""
    settings: dict[str, Any] = {"version": 2, "kinds": list(BODIES), "relations": list(ALL_RELATIONS),
                                "caption_colour": False, "gait": False, **overrides}
    return WorldConfig(**settings)


@dataclass(frozen=True)
class WorldClip:
    """One rendered clip: frames, ground truth and caption."""

    spec: ClipSpec
    video: np.ndarray  # (T, H, W, 3) uint8
    masks: np.ndarray  # (T, 2, H, W) bool, modal
    trajectories: np.ndarray  # (T, 2, 2) float32, (x, y) pixel centres
    caption: str
    sizes: np.ndarray  # (2,) glyph size in pixels
    facing: np.ndarray  # (T, 2) int, +1 facing right, -1 left
    swing: np.ndarray  # (T, 2) float, leg swing -1..1 (0 without gait)

    @property
    def attributes(self) -> list[dict]:
        """Per subject: kind, contrast, colour, size, rgb (JSON-ready)."""
        return [{**s.model_dump(), "rgb": list(s.rgb)} for s in self.spec.subjects]


# --------------------------------------------------------------------------- captions


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def caption(spec: ClipSpec, config: WorldConfig | None = None) -> str:
    """The paper-style caption, e.g. 'A dark red triangle is pushing a light blue circle.'.

    World v2 names only the attributes in `spec.named`: 'A big dark tall figure is pushing a big
    light tall figure on a checkered background.', or 'A dark figure is pushing a light figure.'.
    """
    config = config or WorldConfig()
    named = set(spec.named or ()) if config.version == 2 else set()
    a, b = (s.phrase(config.caption_contrast, config.caption_colour, config.version == 1 or "body" in named)
            for s in spec.subjects)
    if "scale" in named:
        a, b = f"{spec.scale} {a}", f"{spec.scale} {b}"
    scene = f" on {_with_article(SCENE_WORDS[spec.scene])} background" if "scene" in named and spec.scene else ""
    text = f"{_with_article(a)} {ALL_RELATIONS[spec.relation].verb} {_with_article(b)}{scene}."
    return text[0].upper() + text[1:]


@dataclass(frozen=True)
class CaptionSubject:
    """What a caption says about a subject; contrast/colour are None when it does not say."""

    kind: str
    contrast: Contrast | None
    colour: str | None


def parse_caption(text: str) -> tuple[str, tuple[CaptionSubject, CaptionSubject]]:
    """(relation slug, (actor, other)) from a world caption; ValueError when it is not one."""
    subject = rf"an? (?:(dark|light) )?(?:({'|'.join(PALETTE)}) )?({'|'.join(k.noun for k in KINDS.values())})"
    verbs = "|".join(re.escape(r.verb) for r in RELATIONS.values())
    match = re.fullmatch(rf"{subject} ({verbs}) {subject}\.?", text.strip().lower())
    if match is None:
        raise ValueError(f"not a toy-world caption: {text!r}")
    by_noun = {k.noun: k.slug for k in KINDS.values()}
    by_verb = {r.verb: r.slug for r in RELATIONS.values()}
    g = match.groups()
    actor = CaptionSubject(by_noun[g[2]], g[0], g[1])  # type: ignore[arg-type]
    other = CaptionSubject(by_noun[g[6]], g[4], g[5])  # type: ignore[arg-type]
    return by_verb[g[3]], (actor, other)


# --------------------------------------------------------------------------- sampling


def sample_specs(
    config: WorldConfig,
    n: int,
    relations: Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
    seed: int | None = None,
    scenes: Sequence[str] | None = None,
    scales: Sequence[str] | None = None,
    named: Sequence[str] | None = None,
) -> list[ClipSpec]:
    """`n` clip specs, deterministic for (config, relations, kinds, seed, scenes, scales, named).

    Relations are balanced (each appears n // len or one more times, in shuffled order);
    both subjects' kinds are drawn independently from `kinds` (so kinds=['person'] gives
    person+person exemplars, and a list without 'person' gives held-out non-person prompts);
    one subject is dark and the other light; colours and sizes are drawn from the config.
    `relations`/`kinds` default to the config's pools; `seed` defaults to `config.seed`.

    World v2 (issue 21 §1): one body (from `kinds`), scale and scene per clip, drawn from the
    given pools (default: all); the caption names each of scene, body and scale with probability
    `config.name_probability`, or exactly the attributes in `named` when it is given.
    """
    relations = list(config.relations if relations is None else relations)
    kinds = list(config.kinds if kinds is None else kinds)
    version_kinds, version_relations = (KINDS, RELATIONS) if config.version == 1 else (BODIES, ALL_RELATIONS)
    pools = [("relations", relations, version_relations), ("kinds", kinds, version_kinds)]
    if config.version == 2:
        scenes = list(config.scenes if scenes is None else scenes)
        scales = list(SCALES if scales is None else scales)
        pools += [("scenes", scenes, SCENES), ("scales", scales, SCALES), ("named", list(named or NAMEABLE), NAMEABLE)]
    for name, pool, known in pools:
        unknown = [v for v in pool if v not in known]
        if unknown or not pool:
            raise ValueError(f"{name} must be a non-empty list of {', '.join(known)}; got {pool}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng([config.seed if seed is None else seed, 1301])
    order = [relations[i % len(relations)] for i in range(n)]
    order = [order[i] for i in rng.permutation(n)]
    specs = []
    for relation in order:
        dark_first = bool(rng.integers(2))
        contrasts = ["dark" if (i == 0) == dark_first else "light" for i in range(2)]
        if config.version == 1:
            subjects = tuple(
                SubjectSpec(kind=str(rng.choice(kinds)), contrast=contrasts[i], colour=str(rng.choice(config.colours)),
                            size=float(np.round(rng.uniform(*config.size_range), 4)))
                for i in range(2)
            )
            specs.append(ClipSpec(relation=relation, subjects=subjects, seed=int(rng.integers(2**31 - 1))))
            continue
        body, scale, scene = str(rng.choice(kinds)), str(rng.choice(scales)), str(rng.choice(scenes))
        said = tuple(a for a in NAMEABLE if rng.random() < config.name_probability)
        subjects = tuple(
            SubjectSpec(kind=body, contrast=contrasts[i], colour=str(rng.choice(config.colours)),
                        size=float(np.round(rng.uniform(*SCALES[scale]), 4)))
            for i in range(2)
        )
        specs.append(ClipSpec(relation=relation, subjects=subjects, seed=int(rng.integers(2**31 - 1)), scene=scene,
                              scale=scale, named=said if named is None else tuple(a for a in NAMEABLE if a in named)))
    return specs


# --------------------------------------------------------------------------- motion


@dataclass
class _Layout:
    """Per-clip geometry in pixels: sizes, half extents, contact distance, usable span."""

    frames: int
    height: int
    width: int
    size: np.ndarray  # (2,) glyph sizes in px
    half: np.ndarray  # (2, 2) half extents (x, y) in px

    @property
    def t(self) -> np.ndarray:
        return np.linspace(0.0, 1.0, self.frames)

    @property
    def contact(self) -> float:
        """Centre distance at which the two boxes touch side by side."""
        return float(self.half[0, 0] + self.half[1, 0])

    @property
    def span(self) -> float:
        """Largest horizontal centre distance with both subjects in the frame."""
        return float(self.width - 2 * _MARGIN - self.contact)

    @property
    def mean_size(self) -> float:
        return float(self.size.mean())


# A motion returns (x of actor, x of other) relative positions (the other starts on the right,
# i.e. at larger x) and optional relative y tracks (None: a straight, possibly tilted line).
Tracks = tuple[np.ndarray, np.ndarray, np.ndarray | None]


def _approach(g: _Layout, rng: np.random.Generator) -> Tracks:
    far = rng.uniform(0.85, 1.0) * g.span
    near = g.contact + rng.uniform(0.35, 0.7) * g.mean_size
    share = rng.uniform(0.3, 0.7)
    p = smoothstep(g.t, rng.uniform(0.0, 0.12), rng.uniform(0.8, 1.0)) * (far - near)
    return share * p, far - (1 - share) * p, None


def _apart(g: _Layout, rng: np.random.Generator) -> Tracks:
    near = g.contact + rng.uniform(0.3, 0.6) * g.mean_size
    far = rng.uniform(0.85, 1.0) * g.span
    share = rng.uniform(0.3, 0.7)
    p = smoothstep(g.t, rng.uniform(0.0, 0.12), rng.uniform(0.8, 1.0)) * (far - near)
    return -share * p, near + (1 - share) * p, None


def _push(g: _Layout, rng: np.random.Generator) -> Tracks:
    start = rng.uniform(0.5, 0.65) * g.span
    recoil = min(rng.uniform(0.3, 0.45) * g.span, g.span - start)
    touch = g.contact * rng.uniform(0.95, 1.0)
    hit, duration = rng.uniform(0.38, 0.5), rng.uniform(0.2, 0.3)
    after = smoothstep(g.t, hit, hit + duration)
    actor = (start - touch) * smoothstep(g.t, rng.uniform(0.0, 0.1), hit) + rng.uniform(0.0, 0.12) * recoil * after
    return actor, start + recoil * after, None


def _follow(g: _Layout, rng: np.random.Generator) -> Tracks:
    gap = g.contact + rng.uniform(0.6, 1.1) * g.mean_size
    travel = g.span - gap
    begin, end, lag = rng.uniform(0.0, 0.1), rng.uniform(0.8, 0.95), rng.uniform(0.04, 0.1)
    leader = gap + travel * smoothstep(g.t, begin, end)
    return travel * smoothstep(g.t - lag, begin, end), leader, None


def _shake_hands(g: _Layout, rng: np.random.Generator) -> Tracks:
    start, end = rng.uniform(0.65, 0.9) * g.span, rng.uniform(0.5, 0.8) * g.span
    touch = g.contact * rng.uniform(0.95, 1.0)
    meet = rng.uniform(0.3, 0.4)
    part = meet + rng.uniform(0.22, 0.3)
    close = smoothstep(g.t, rng.uniform(0.0, 0.08), meet) * (start - touch)
    away = smoothstep(g.t, part, rng.uniform(0.9, 1.0)) * (end - touch)
    s1, s2 = rng.uniform(0.3, 0.7, 2)
    return s1 * close - s2 * away, start - (1 - s1) * close + (1 - s2) * away, None


def _hug(g: _Layout, rng: np.random.Generator) -> Tracks:
    start = rng.uniform(0.6, 0.9) * g.span
    hold = g.contact * rng.uniform(0.75, 0.88)
    close = smoothstep(g.t, rng.uniform(0.0, 0.08), rng.uniform(0.35, 0.5)) * (start - hold)
    share = rng.uniform(0.3, 0.7)
    return share * close, start - (1 - share) * close, None


def _orbit(g: _Layout, rng: np.random.Generator) -> Tracks:
    rx_max = (g.width - 2 * _MARGIN) / 2 - g.half[0, 0]
    ry_max = (g.height - 2 * _MARGIN) / 2 - g.half[0, 1]
    rx = max(rng.uniform(0.7, 0.9) * rx_max, 1.15 * g.contact)
    ry = rng.uniform(0.75, 0.95) * ry_max
    turns = rng.uniform(0.9, 1.25) * (1 if rng.integers(2) else -1)
    angle = rng.uniform(0, 2 * np.pi) + 2 * np.pi * turns * g.t
    zeros = np.zeros(g.frames)
    return rx * np.cos(angle), zeros, np.stack([ry * np.sin(angle), zeros])


def _loom(g: _Layout, rng: np.random.Generator) -> Tracks:
    """World v2: the actor walks up to the other (which stays), growing to LOOM_GROWTH x (`_growth`)."""
    grown = g.half[0, 0] * LOOM_GROWTH + g.half[1, 0]
    far = rng.uniform(0.85, 1.0) * (g.width - 2 * _MARGIN - grown)
    near = min(grown + rng.uniform(0.1, 0.3) * g.mean_size, far)
    p = smoothstep(g.t, rng.uniform(0.0, 0.12), rng.uniform(0.75, 0.95)) * (far - near)
    return p, np.full(g.frames, far), None


_MOTIONS: dict[str, Callable[[_Layout, np.random.Generator], Tracks]] = {
    "approach": _approach, "apart": _apart, "push": _push, "follow": _follow,
    "shake_hands": _shake_hands, "hug": _hug, "orbit": _orbit, "loom": _loom,
}
assert set(_MOTIONS) == set(ALL_RELATIONS)


def _growth(spec: ClipSpec, centres: np.ndarray) -> np.ndarray:
    """(T, 2) size factors: 1, except the looming actor's, which grows with its progress to LOOM_GROWTH."""
    scale = np.ones(centres.shape[:2], np.float32)
    if spec.relation == "loom":
        travel = centres[:, 0, 0] - centres[0, 0, 0]
        progress = travel / travel[-1] if abs(travel[-1]) > 1e-6 else np.linspace(0, 1, len(travel))
        scale[:, 0] = 1 + (LOOM_GROWTH - 1) * np.clip(progress, 0, 1)
    return scale


def _place(relative: np.ndarray, low: np.ndarray, high: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shift (2, T) relative tracks by one random offset so subject i stays in [low_i, high_i]."""
    lo = float(np.max(low - relative.min(axis=1)))
    hi = float(np.min(high - relative.max(axis=1)))
    offset = rng.uniform(lo, hi) if lo <= hi else (lo + hi) / 2
    return relative + offset


def _trajectories(spec: ClipSpec, config: WorldConfig, rng: np.random.Generator) -> tuple[np.ndarray, _Layout]:
    """(T, 2, 2) centres and the layout: relative motion, mirrored at random, placed in the frame."""
    size = np.array([s.size for s in spec.subjects]) * config.height
    kinds = [ALL_KINDS[s.kind] for s in spec.subjects]
    half = np.array([[k.half_width, k.half_height] for k in kinds]) * size[:, None]
    layout = _Layout(config.frames, config.height, config.width, size, half)
    xa, xb, ys = _MOTIONS[spec.relation](layout, rng)
    x = np.stack([xa, xb]) * (1 if rng.integers(2) else -1)
    extent = half * np.array([[LOOM_GROWTH], [1.0]]) if spec.relation == "loom" else half
    low, high = _MARGIN + extent, np.array([config.width, config.height]) - _MARGIN - extent
    if ys is None:  # a straight line, tilted a little, subjects a little off it
        contact_like = spec.relation in ("push", "shake_hands", "hug", "loom")
        spread = (0.03 if contact_like else 0.08) * config.height
        y = rng.uniform(-0.15, 0.15) * x + rng.uniform(-spread, spread, (2, 1))
        if float(np.min(high[:, 1] - low[:, 1] - np.ptp(y, axis=1))) < 0:
            y = np.zeros_like(x)
    else:
        y = ys
    centres = np.stack([_place(x, low[:, 0], high[:, 0], rng), _place(y, low[:, 1], high[:, 1], rng)], axis=-1)
    return centres.transpose(1, 0, 2).astype(np.float32), layout


# --------------------------------------------------------------------------- drawing


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points) * (1 << _SHIFT)).astype(np.int32)


# Shifts that put the bounding-box centre of a glyph's rest pose on its anchor.
_GLYPH_OFFSET = {"person": np.array([0.0, -0.025]), "dog": np.array([0.033, -0.033])}


PERSON_HEAD_RADIUS = 0.14  # glyph units


def person_joints(swing: float) -> dict[str, tuple[float, float]]:
    """The stick-figure person's joints in glyph units: x toward its facing, y down, rest centre at 0.

    The figure is drawn from these points (`_draw_glyph`), so a skeleton made from them lies on
    its pixels (`data/world_ntu.py`). The arms hang from `shoulders`; `left` is the side behind
    the figure's facing. `swing` (-1..1) moves the legs and, a little, the arms.
    """
    joints = {"head": (0.0, -0.46), "neck": (0.0, -0.32), "shoulders": (0.0, -0.24), "pelvis": (0.0, 0.14)}
    for name, side in (("left", -1), ("right", 1)):
        joints[f"{name}_hand"] = (side * 0.3, -0.02 - 0.06 * side * swing)
        joints[f"{name}_foot"] = (side * 0.2 + 0.12 * side * swing, 0.6)
    return joints


def glyph_to_pixels(kind: str, points: np.ndarray, centre: np.ndarray, size: float, facing: int) -> np.ndarray:
    """(N, 2) glyph-unit points of a `kind` glyph drawn at `centre` with `size` and `facing` -> (x, y) pixels."""
    p = (np.asarray(points, float) + _GLYPH_OFFSET.get(kind, 0.0)) * float(size)
    return centre + p * np.array([facing, 1.0])


def _draw_glyph(
    canvas: np.ndarray, kind: str, centre: np.ndarray, size: float, facing: int, swing: float
) -> None:
    """Draw one glyph (value 255, anti-aliased) at `centre` (x, y) px; coordinates are in units of `size`."""
    aa, size = cv2.LINE_AA, float(size)
    width = max(2, int(0.14 * size + 0.5))

    def at(points: Sequence[Sequence[float]]) -> np.ndarray:
        return _fixed(glyph_to_pixels(kind, np.asarray(points, float), centre, size, facing))

    def line(a: Sequence[float], b: Sequence[float]) -> None:
        p, q = at([a, b])
        cv2.line(canvas, tuple(map(int, p)), tuple(map(int, q)), 255, width, aa, _SHIFT)

    def disc(c: Sequence[float], r: float) -> None:
        cv2.circle(canvas, tuple(map(int, at([c])[0])), round(r * size * (1 << _SHIFT)), 255, -1, aa, _SHIFT)

    if kind == "circle":
        disc((0, 0), 0.5)
    elif kind == "square":
        cv2.fillPoly(canvas, [at([(-0.45, -0.45), (0.45, -0.45), (0.45, 0.45), (-0.45, 0.45)])], 255, aa, _SHIFT)
    elif kind == "triangle":
        cv2.fillPoly(canvas, [at([(0, -0.475), (0.55, 0.475), (-0.55, 0.475)])], 255, aa, _SHIFT)
    elif kind == "star":
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2, 0.62 * 0.45, 0.62)
        points = np.stack([radii * np.cos(angles), radii * np.sin(angles) + 0.0592], axis=1)
        cv2.fillPoly(canvas, [at(points)], 255, aa, _SHIFT)
    elif kind == "person":
        joint = person_joints(swing)
        disc(joint["head"], PERSON_HEAD_RADIUS)
        line(joint["neck"], joint["pelvis"])
        for side in ("left", "right"):
            line(joint["shoulders"], joint[f"{side}_hand"])
            line(joint["pelvis"], joint[f"{side}_foot"])
    elif kind in BODIES:
        body = BODIES[kind]
        axes = (round(body.half_width * size * (1 << _SHIFT)), round(body.half_height * size * (1 << _SHIFT)))
        cv2.ellipse(canvas, tuple(map(int, at([(0, 0)])[0])), axes, 0, 0, 360, 255, -1, aa, _SHIFT)
    elif kind == "dog":
        centre_body = at([(-0.04, -0.03)])[0]
        axes = (round(0.36 * size * (1 << _SHIFT)), round(0.15 * size * (1 << _SHIFT)))
        cv2.ellipse(canvas, tuple(map(int, centre_body)), axes, 0, 0, 360, 255, -1, aa, _SHIFT)
        disc((0.43, -0.23), 0.14)
        line((0.23, -0.09), (0.39, -0.19))
        line((-0.37, -0.07), (-0.57, -0.27))
        for x, phase in ((-0.29, 1), (-0.15, -1), (0.11, -1), (0.23, 1)):
            line((x, 0.05), (x + 0.12 * phase * swing, 0.37))
    else:  # pragma: no cover - guarded by SubjectSpec
        raise ValueError(f"unknown kind {kind!r}")


def _background(config: WorldConfig, rng: np.random.Generator) -> np.ndarray:
    """A plain, faintly tinted grey (H, W, 3) float image, lightly textured with some probability."""
    level = rng.uniform(*config.background_luma)
    tint = rng.uniform(-8, 8, 3)
    colour = level + tint - float(tint @ LUMA)
    image = np.broadcast_to(colour, (config.height, config.width, 3)).astype(np.float32)
    if rng.random() < config.texture_probability:
        coarse = rng.normal(0, 1, (config.height // 16 + 2, config.width // 16 + 2)).astype(np.float32)
        smooth = cv2.resize(coarse, (config.width, config.height), interpolation=cv2.INTER_CUBIC)
        image = image + config.texture_strength * smooth[:, :, None]
    return image


def _scene_background(scene: str, config: WorldConfig, rng: np.random.Generator) -> np.ndarray:
    """World v2: a faintly tinted (H, W, 3) float scene of two grey levels in SCENE_BAND-pixel bands."""
    h, w = config.height, config.width
    tint = rng.uniform(-8, 8, 3)
    tint = tint - float(tint @ LUMA)
    low, high = (SCENE_LOW, SCENE_HIGH) if rng.integers(2) else (SCENE_HIGH, SCENE_LOW)
    y, x = np.mgrid[:h, :w]
    px, py = rng.integers(2 * SCENE_BAND, size=2)
    if scene == "plain":
        on = np.zeros((h, w), bool)
        low = high = rng.uniform(SCENE_LOW, SCENE_HIGH)
    elif scene == "stripes":
        on = ((x + px) // SCENE_BAND) % 2 == 1
    elif scene == "checkerboard":
        on = ((x + px) // SCENE_BAND + (y + py) // SCENE_BAND) % 2 == 1
    else:  # split: two halves, the border somewhere about the middle
        on = y >= int(rng.uniform(0.35, 0.65) * h)
    level = np.where(on, high, low).astype(np.float32)
    return level[:, :, None] + tint.astype(np.float32)


def _gait(track: np.ndarray, size: float, on: bool) -> tuple[np.ndarray, np.ndarray]:
    """Facing (+1 right / -1 left) and leg swing (-1..1) per frame from a (T, 2) track."""
    step = np.diff(track[:, 0], prepend=track[:1, 0])
    speed = np.hypot(*np.diff(track, axis=0, prepend=track[:1]).T)
    facing = np.ones(len(track), int)
    current = 1
    for k, dx in enumerate(step):
        if abs(dx) > 0.15:
            current = 1 if dx > 0 else -1
        facing[k] = current
    swing = np.sin(np.cumsum(speed) * np.pi / (0.35 * size)) * np.clip(speed / 0.5, 0, 1)
    return facing, swing if on else np.zeros(len(track))


def render_clip(spec: ClipSpec, config: WorldConfig | None = None, drawn: Sequence[int] = (0, 1)) -> WorldClip:
    """Render one clip; the result depends only on (spec, config).

    `drawn` lists the subjects painted (diagnostics paint only the actor: `drawn=(0,)`); an
    undrawn subject still moves as the relation says, but is invisible and its masks are empty.
    """
    config = config or WorldConfig()
    rng = np.random.default_rng([spec.seed, config.version])
    centres, layout = _trajectories(spec, config, rng)
    if config.version == 1:
        background = _background(config, rng)
    else:
        background = _scene_background(spec.scene or "plain", config, rng)
    growth = _growth(spec, centres)
    facing, swing = zip(*(_gait(centres[:, i], layout.size[i], config.gait) for i in range(2)))
    # A subject still at the start faces the other one.
    for i in range(2):
        if not np.any(np.abs(np.diff(centres[:, i, 0])) > 0.15):
            facing[i][:] = 1 if centres[0, 1 - i, 0] > centres[0, i, 0] else -1
    if spec.relation == "orbit":  # 3-D orbit: the actor passes in front below the other, behind above it
        front = np.where(centres[:, 0, 1] > centres[:, 1, 1], 0, 1)
    else:
        front = np.full(config.frames, int(rng.integers(2)))
    colours = [np.array(s.rgb, np.float32) for s in spec.subjects]

    video = np.empty((config.frames, config.height, config.width, 3), np.uint8)
    masks = np.zeros((config.frames, 2, config.height, config.width), bool)
    canvas = np.zeros((2, config.height, config.width), np.uint8)
    for k in range(config.frames):
        canvas[:] = 0
        for i in drawn:
            subject = spec.subjects[i]
            _draw_glyph(canvas[i], subject.kind, centres[k, i], layout.size[i] * growth[k, i], int(facing[i][k]),
                        float(swing[i][k]))
        image = background.copy()
        first = 1 - front[k]
        for i in (first, front[k]):
            alpha = canvas[i, :, :, None].astype(np.float32) / 255.0
            image = image * (1 - alpha) + colours[i] * alpha
        masks[k, front[k]] = canvas[front[k]] >= 128
        masks[k, first] = (canvas[first] >= 128) & ~masks[k, front[k]]
        video[k] = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return WorldClip(spec, video, masks, centres, caption(spec, config), np.asarray(layout.size, np.float32),
                     np.stack(facing, axis=1), np.stack(swing, axis=1).astype(np.float32))


# --------------------------------------------------------------------------- degradation


def degrade_video(video: np.ndarray, seed: int, strength: float = 1.0) -> np.ndarray:
    """A stand-in for a tiny VAE's reconstruction: blur, temporal smear, colour shift, noise.

    Per clip (seeded): Gaussian blur sigma 0.8-1.5 px, a [1, 2, 1] temporal mix, desaturation
    up to 50%, per-channel gain 0.85-1.15 and offset +-12, Gaussian noise sigma 3-8; all
    scaled by `strength`. Used to validate and augment the judge (issue 13 §3).
    """
    rng = np.random.default_rng([seed, 77])
    frames = np.asarray(video, np.float32)
    sigma = strength * rng.uniform(0.8, 1.5)
    if sigma > 0:
        frames = np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in frames])
    if len(frames) > 2 and strength > 0:
        padded = np.concatenate([frames[:1], frames, frames[-1:]])
        mix = 0.25 * min(strength, 1.0)
        frames = (1 - 2 * mix) * frames + mix * (padded[:-2] + padded[2:])
    grey = (frames @ LUMA.astype(np.float32))[..., None]
    desaturate = strength * rng.uniform(0.0, 0.5)
    frames = (1 - desaturate) * frames + desaturate * grey
    gain = 1 + strength * rng.uniform(-0.15, 0.15, 3)
    offset = strength * rng.uniform(-12, 12, 3)
    frames = frames * gain + offset + strength * rng.uniform(3, 8) * rng.normal(0, 1, frames.shape)
    return np.clip(np.round(frames), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- datasets


class WorldFolderError(DatasetFolderError):
    """A folder `write_world_dataset` must not write into; the message says why and what to do."""


@dataclass(frozen=True)
class WorldRecord:
    """Where one written clip lives: `<folder>/videos/<name>.<ext>`, `captions/`, `clips/<name>.npz`."""

    name: str
    spec: ClipSpec
    caption: str
    video: Path
    caption_file: Path
    arrays: Path


def _records(folder: Path, specs: Sequence[ClipSpec], config: WorldConfig) -> list[WorldRecord]:
    records = []
    for index, spec in enumerate(specs):
        name = f"{index:05d}_{spec.relation}"
        records.append(WorldRecord(
            name, spec, caption(spec, config), folder / VIDEO_DIR / f"{name}.{config.video_format}",
            folder / CAPTION_DIR / f"{name}.txt", folder / CLIP_DIR / f"{name}.npz",
        ))
    return records


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _write_arrays(path: Path, clip: WorldClip, store_frames: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    arrays = {"masks": clip.masks, "trajectories": clip.trajectories}
    if store_frames:
        arrays["video"] = clip.video
    with open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    os.replace(tmp, path)


def _read_index(folder: Path) -> dict | None:
    try:
        index = json.loads((folder / INDEX_NAME).read_text())
    except (OSError, ValueError):
        return None
    return index if isinstance(index, dict) and index.get("generator") == "dreamrelation.world" else None


def write_world_dataset(
    folder: str | Path, specs: Sequence[ClipSpec], config: WorldConfig | None = None
) -> list[WorldRecord]:
    """Render `specs` into `folder`, or return at once when that exact dataset is already there.

    Ownership follows `synthetic.generate_dataset`: the folder must be new, empty, or hold this
    generator's `world_index.json`. The index is written before the first clip (listing every
    file about to be written, `complete: false`) and again last (config, specs, captions,
    `complete: true`), so an interrupted run resumes. Files are written under temporary names
    and renamed. A file the generator did not write is never overwritten or removed; files an
    older index listed and the new dataset lacks are removed.
    """
    folder = Path(folder)
    config = config or WorldConfig()
    records = _records(folder, specs, config)
    index = _read_index(folder)
    wanted = {
        "generator": "dreamrelation.world", "version": config.version, "complete": True,
        "config": config.key_dump(), "specs": [s.key_dump() for s in specs],
    }
    paths = [p for r in records for p in (r.video, r.caption_file, r.arrays)]
    if index and {k: index.get(k) for k in wanted} == wanted and all(p.exists() for p in paths):
        return records
    if index is None:
        if folder.exists() and not folder.is_dir():
            raise WorldFolderError(f"world dataset folder {folder} is a file, not a folder")
        foreign = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
        if foreign:
            raise WorldFolderError(
                f"world dataset folder {folder} holds files the world generator did not write "
                f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); point it at an empty or new folder"
            )
        folder.mkdir(parents=True, exist_ok=True)
    ours = set((index or {}).get("files", []))
    files = [str(p.relative_to(folder)) for p in paths]
    clash = [f for f in files if f not in ours and (folder / f).exists()]
    if clash:
        raise WorldFolderError(
            f"world dataset {folder}: {clash[0]} exists but was not written by the world generator; "
            "refusing to overwrite it (move it away, or use another folder)"
        )
    _write_json(folder / INDEX_NAME, {"generator": "dreamrelation.world", "version": config.version,
                                      "complete": False, "files": sorted(ours | set(files))})
    for old in sorted(ours - set(files)):
        (folder / old).unlink(missing_ok=True)
    for record in records:
        clip = render_clip(record.spec, config)
        write_video(record.video, clip.video, config.fps)
        record.caption_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.caption_file.with_name(f".{record.caption_file.name}.partial")
        tmp.write_text(record.caption + "\n")
        os.replace(tmp, record.caption_file)
        _write_arrays(record.arrays, clip, config.store_frames)
    clips = [{"name": r.name, "caption": r.caption, "video": str(r.video.relative_to(folder)),
              "caption_file": str(r.caption_file.relative_to(folder)), "arrays": str(r.arrays.relative_to(folder)),
              "attributes": [{**s.model_dump(), "rgb": list(s.rgb)} for s in r.spec.subjects]}
             for r in records]
    _write_json(folder / INDEX_NAME, {**wanted, "clips": clips, "files": files})
    return records


def read_world_dataset(folder: str | Path) -> tuple[WorldConfig, list[WorldRecord]]:
    """The config and records of a complete world dataset written by `write_world_dataset`."""
    folder = Path(folder)
    index = _read_index(folder)
    if index is None or not index.get("complete"):
        raise WorldFolderError(f"{folder} holds no complete world dataset (no complete {INDEX_NAME})")
    config = WorldConfig.model_validate(index["config"])
    return config, _records(folder, [ClipSpec.model_validate(s) for s in index["specs"]], config)


def load_arrays(record: WorldRecord) -> dict[str, np.ndarray]:
    """A written clip's arrays: masks (T, 2, H, W) bool, trajectories (T, 2, 2), video if stored."""
    with np.load(record.arrays) as data:
        return {key: data[key] for key in data.files}
