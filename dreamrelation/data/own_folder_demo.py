"""The own-folder demo dataset (issue 12): toy-world clips exported as a user would lay out their videos.

`export_own_folder_demo(folder)` writes, once, under a folder it owns:

    videos/Push Away/take 01.mp4 + take 01.txt + take 01.masks.npz ...   (relation id push_away)
    videos/Orbit · Umkreisen/IMG_2231.mov ...                           (relation id orbit_umkreisen)
    relations.yaml   a caption template for push_away (for its clip without a sidecar)
    prompts.csv      evaluation prompts per relation (relation,prompt)

The clips mix containers (.mp4 .mov .mkv .webm .avi), frame rates and sizes; one clip per
relation is unusable on purpose (too short; no caption), one starts its window from sidecar
front matter, and one has its masks as a folder of label PNGs, so the demo crosses every branch
of the folder path. Clips are two stick-figure people (the world's `person` kind) doing the
world's push and orbit motions, with ground-truth masks.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dreamrelation.data.folder import MASKS_DIR, MASKS_NPZ
from dreamrelation.data.video import write_video
from dreamrelation.data.world import ClipSpec, SubjectSpec, WorldConfig, render_clip

#: Bump when the exported files change; an older export is then rebuilt.
EXPORT_VERSION = 1
STAMP = ".own-folder-demo.json"
VIDEOS = "videos"
RELATIONS_FILE = "relations.yaml"
PROMPTS_FILE = "prompts.csv"


class DemoFolderError(ValueError):
    """The demo folder exists but was not written by the exporter."""


@dataclass(frozen=True)
class DemoClip:
    """One exported clip: where it goes and how it is rendered and described."""

    relation_folder: str
    name: str  # file name with extension
    world_relation: str
    frames: int
    height: int
    width: int
    fps: float
    sidecar: str | None  # the .txt text (None: no sidecar)
    masks: str  # "npz-bool", "npz-uint8" or "png"


_PUSH, _ORBIT = "Push Away", "Orbit · Umkreisen"
_FRONT = "---\nstart_seconds: 0.5\n---\n"
CLIPS = (
    DemoClip(_PUSH, "take 01.mp4", "push", 25, 64, 96, 12.0, "", "npz-bool"),
    DemoClip(_PUSH, "take 02.mkv", "push", 31, 80, 128, 15.0, _FRONT, "npz-uint8"),
    DemoClip(_PUSH, "take 03.webm", "push", 25, 96, 160, 24.0, None, "npz-bool"),
    DemoClip(_PUSH, "take-04.avi", "push", 25, 64, 96, 12.0, "", "png"),
    DemoClip(_PUSH, "take 05 (short).mp4", "push", 7, 64, 96, 12.0, "", "npz-bool"),
    DemoClip(_ORBIT, "IMG_2231.mov", "orbit", 25, 64, 96, 12.0, "", "npz-bool"),
    DemoClip(_ORBIT, "IMG_2232.mp4", "orbit", 25, 128, 128, 15.0, "", "npz-bool"),
    DemoClip(_ORBIT, "IMG_2233.mp4", "orbit", 37, 64, 96, 30.0, "", "npz-uint8"),
    DemoClip(_ORBIT, "IMG_2234.mkv", "orbit", 25, 80, 128, 12.0, "", "npz-bool"),
    DemoClip(_ORBIT, "IMG_2235 no caption.mp4", "orbit", 25, 64, 96, 12.0, None, "npz-bool"),
)
#: Relation id -> caption template (push_away's third clip has no sidecar; the orbit folder has none).
TEMPLATES = {"push_away": "A {subject1} is pushing a {subject2}."}
PROMPTS = {
    "push_away": ["A bear is pushing a raccoon.", "A robot is pushing a snowman."],
    "orbit_umkreisen": ["A dog is circling around a cat.", "An astronaut is circling around a penguin."],
}


def _subjects(index: int) -> tuple[SubjectSpec, SubjectSpec]:
    colours = ("red", "blue", "green", "orange", "purple", "yellow")
    return (
        SubjectSpec(kind="person", contrast="dark", colour=colours[index % 6], size=0.36),
        SubjectSpec(kind="person", contrast="light", colour=colours[(index + 3) % 6], size=0.36),
    )


def _write_clip(folder: Path, index: int, clip: DemoClip) -> None:
    world = WorldConfig(frames=clip.frames, height=clip.height, width=clip.width, fps=clip.fps, gait=True)
    rendered = render_clip(ClipSpec(relation=clip.world_relation, subjects=_subjects(index), seed=100 + index), world)
    stem = clip.name.rsplit(".", 1)[0]
    relation_dir = folder / VIDEOS / clip.relation_folder
    relation_dir.mkdir(parents=True, exist_ok=True)
    write_video(relation_dir / clip.name, rendered.video, clip.fps)
    if clip.sidecar is not None:
        (relation_dir / f"{stem}.txt").write_text(clip.sidecar + rendered.caption + "\n", encoding="utf-8")
    if clip.masks == "png":
        masks_dir = relation_dir / f"{stem}{MASKS_DIR}"
        masks_dir.mkdir()
        for t, frame in enumerate(rendered.masks):
            labels = np.where(frame[0], 10, np.where(frame[1], 20, 0)).astype(np.uint8)
            Image.fromarray(labels).save(masks_dir / f"frame{t}.png")
    else:
        masks = rendered.masks.astype(np.uint8) if clip.masks == "npz-uint8" else rendered.masks
        np.savez_compressed(relation_dir / f"{stem}{MASKS_NPZ}", masks=masks)


def _write_tables(folder: Path) -> None:
    lines = [f"- id: {rid}\n  caption: \"{caption}\"\n" for rid, caption in TEMPLATES.items()]
    (folder / RELATIONS_FILE).write_text("".join(lines), encoding="utf-8")
    rows = ["relation,prompt"] + [f'{rid},"{p}"' for rid, prompts in PROMPTS.items() for p in prompts]
    (folder / PROMPTS_FILE).write_text("\n".join(rows) + "\n", encoding="utf-8")


def export_own_folder_demo(folder: str | Path) -> Path:
    """Write the demo dataset under `folder` (see the module docstring); return `folder / videos`.

    Built in a temporary sibling and renamed into place, so an interrupted export leaves nothing
    half-written under `folder`. An existing complete export of this version is reused; an
    existing folder without the exporter's stamp is never written into (DemoFolderError).
    """
    folder = Path(folder)
    stamp = folder / STAMP
    wanted = {"exporter": EXPORT_VERSION, "clips": len(CLIPS)}
    if folder.exists():
        try:
            found = json.loads(stamp.read_text())
        except (OSError, ValueError):
            raise DemoFolderError(
                f"{folder} exists but was not written by the own-folder demo; move it away or pick another folder"
            ) from None
        if found == wanted:
            return folder / VIDEOS
        shutil.rmtree(folder)  # an older export of ours (its stamp says so): rebuild it
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for index, clip in enumerate(CLIPS):
            _write_clip(tmp, index, clip)
        _write_tables(tmp)
        (tmp / STAMP).write_text(json.dumps(wanted))
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder / VIDEOS
