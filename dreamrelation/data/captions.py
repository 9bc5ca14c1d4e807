"""write_captions: one caption per selected clip, in the manifest and as `.txt` sidecars.

The sidecar layout is the authors' training-folder layout: `<relation dir>/<clip>.txt` beside
`<clip><ext>`, a symlink to (or copy of) the clip's video.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import fsspec
from pydantic import Field

from dreamrelation.configbase import StrictConfig
from dreamrelation.data.manifest import Manifest
from dreamrelation.data.relations import Relation, read_user_table

MANIFEST_NAME = "manifest.json"  # the captioned manifest inside a write_captions artifact


class CaptionError(ValueError):
    """A malformed per-clip caption file."""


class CaptionConfig(StrictConfig):
    """Where captions come from and how the sidecar folder is laid out."""

    added_later: ClassVar[dict[str, Any]] = {"subject_words": ("person", "person")}

    captions_file: str | None = Field(
        None, description="Optional per-clip captions: CSV with clip_id,caption or a YAML mapping clip_id -> caption"
    )
    link_mode: Literal["symlink", "copy"] = Field(
        "symlink", description="Put videos beside their .txt as symlinks (local roots only) or copies"
    )
    subject_words: tuple[str, str] = Field(
        ("person", "person"),
        description="Words for {subject1} and {subject2} in a relation's caption template "
        "(relations_file), e.g. [dog, child]",
    )


def load_clip_captions(path: str | Path) -> dict[str, str]:
    """Per-clip captions from CSV (`clip_id,caption`) or YAML (`clip_id: caption`)."""
    data = read_user_table(path, "caption file", CaptionError) or {}
    if isinstance(data, list):  # CSV rows
        if data and not {"clip_id", "caption"} <= set(data[0]):
            raise CaptionError(f"caption file {path}: the CSV header must have columns clip_id,caption")
        captions = {row["clip_id"].strip(): (row["caption"] or "").strip() for row in data}
    elif isinstance(data, dict):
        captions = {str(k).strip(): str(v).strip() for k, v in data.items()}
    else:
        raise CaptionError(f"caption file {path}: expected a mapping clip_id -> caption")
    empty = [clip for clip, caption in captions.items() if not caption]
    if empty:
        raise CaptionError(f"caption file {path}: empty caption for {', '.join(empty[:5])}")
    return captions


def fill_template(template: str, subject_words: tuple[str, str]) -> str:
    """A relation's caption with `{subject1}` / `{subject2}` replaced by the subjects' words."""
    return template.replace("{subject1}", subject_words[0]).replace("{subject2}", subject_words[1])


def caption_manifest(
    manifest: Manifest,
    relation: Relation,
    clip_captions: dict[str, str] | None = None,
    subject_words: tuple[str, str] = ("person", "person"),
) -> Manifest:
    """A copy of the manifest with every clip captioned.

    Each clip's caption is, first found: its row in `clip_captions` (captions_file), the caption
    it was selected with (a folder dataset's `.txt` sidecar), the relation's caption (template).
    """
    clip_captions = clip_captions or {}
    default = fill_template(relation.caption, subject_words)
    clips = []
    for clip in manifest.clips:
        caption = clip_captions.get(clip.clip_id) or clip.caption or default
        if not caption:
            raise CaptionError(f"clip {clip.clip_id} has no caption and relation {relation.id} has no caption template")
        clips.append(clip.model_copy(update={"caption": caption}))
    return manifest.model_copy(update={"clips": clips})


def write_sidecars(manifest: Manifest, out_dir: str, link_mode: str = "symlink") -> None:
    """Write `<out_dir>/<clip>.txt` and a link/copy `<out_dir>/<clip><ext>` for every clip."""
    fs, base = fsspec.core.url_to_fs(out_dir)
    fs.makedirs(base, exist_ok=True)
    for clip in manifest.clips:
        if clip.caption is None:
            raise CaptionError(f"clip {clip.clip_id} has no caption")
        with fs.open(f"{base}/{clip.clip_id}.txt", "w") as handle:
            handle.write(clip.caption + "\n")
        ext = os.path.splitext(clip.video)[1]
        target = f"{base}/{clip.clip_id}{ext}"
        local_video = "://" not in clip.video or clip.video.startswith("file://")
        if link_mode == "symlink" and local_video and fs.protocol in ("file", ("file", "local")):
            os.symlink(os.path.abspath(clip.video.removeprefix("file://")), target)
        else:
            with fsspec.open(clip.video, "rb") as src, fs.open(target, "wb") as dst:
                dst.write(src.read())
