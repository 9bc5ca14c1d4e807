"""write_captions: one caption per selected clip, in the manifest and as `.txt` sidecars.

The sidecar layout is the authors' training-folder layout: `<relation dir>/<clip>.txt` beside
`<clip><ext>`, a symlink to (or copy of) the clip's video.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

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

    captions_file: str | None = Field(
        None, description="Optional per-clip captions: CSV with clip_id,caption or a YAML mapping clip_id -> caption"
    )
    link_mode: Literal["symlink", "copy"] = Field(
        "symlink", description="Put videos beside their .txt as symlinks (local roots only) or copies"
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


def caption_manifest(manifest: Manifest, relation: Relation, clip_captions: dict[str, str] | None = None) -> Manifest:
    """A copy of the manifest with every clip captioned (per-clip caption, else the relation's)."""
    clip_captions = clip_captions or {}
    clips = [c.model_copy(update={"caption": clip_captions.get(c.clip_id, relation.caption)}) for c in manifest.clips]
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
