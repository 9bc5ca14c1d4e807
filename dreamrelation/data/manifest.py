"""The clip manifest: which clips a relation trains on, and why every other clip was dropped."""

from __future__ import annotations

from typing import Any

import fsspec
from pydantic import BaseModel, Field


class ClipRecord(BaseModel):
    """One selected clip and the facts later stages need without reopening the dataset."""

    clip_id: str = Field(description="NTU clip name (S001C002P003R001A058), or the video's file stem in a folder dataset")
    relation: str = Field(description="Relation id, e.g. A058 or fist_bump")
    video: str = Field(description="Path or URL of the RGB video")
    skeleton: str | None = Field(default=None, description="Path or URL of the .skeleton file (NTU clips only)")
    frames: int = Field(description="Frames in the source video")
    fps: float = Field(description="Frame rate of the source video")
    width: int = Field(description="Source width in pixels")
    height: int = Field(description="Source height in pixels")
    start_seconds: float = Field(default=0.0, ge=0, description="Where the clip's window starts in the source video")
    masks: str | None = Field(
        default=None, description="The user's <clip>.masks.npz or <clip>.masks/ (folder datasets; masks.backend=provided)"
    )
    caption: str | None = Field(
        default=None, description="Training caption (the folder dataset's sidecar at selection; set by write_captions)"
    )


class DroppedClip(BaseModel):
    """A clip of the requested relation that was not selected, with the reason."""

    clip_id: str
    reason: str


class Manifest(BaseModel):
    """Selection result for one relation (written by select_clips, captioned by write_captions)."""

    relation: str = Field(description="Relation id")
    relation_name: str = Field(description="Human-readable relation name")
    dataset_root: str = Field(description="Dataset root the clips were selected from")
    clips: list[ClipRecord] = Field(default_factory=list)
    dropped: list[DroppedClip] = Field(default_factory=list)
    available: int = Field(
        0, description="Usable clips among the checked ones: all usable clips when `unchecked` is 0"
    )
    check_all: bool = Field(
        True, description="Every candidate was checked (False: lazy, checking stopped at clips_per_relation usable)"
    )
    candidates: int = Field(0, description="Clips of the relation found under the dataset root (0: not recorded)")
    checked: list[str] = Field(
        default_factory=list, description="Clips whose files were opened, in the seeded order they were checked"
    )
    unchecked: int = Field(0, description="Candidates passing the name filters that were never checked (lazy)")
    config: dict[str, Any] = Field(default_factory=dict, description="Selection config used")
    fingerprint: str = Field("", description="Fingerprint of the selection")

    @property
    def clip_ids(self) -> list[str]:
        return [clip.clip_id for clip in self.clips]


def read_manifest(uri: str) -> Manifest:
    """Load a manifest JSON from a path or URL."""
    with fsspec.open(uri, "r") as handle:
        return Manifest.model_validate_json(handle.read())
