"""select_clips: choose k training clips of one relation from an NTU RGB+D folder (DESIGN.md).

Scans a dataset root (local folder or fsspec URL) for `SsssCcccPpppRrrrAaaa` files, keeps the
requested relation, applies the setup/camera/performer filters, drops clips without a
skeleton, with fewer than two tracked bodies in most frames, or too short for the target
clip, then samples k of the rest with a seed. Every dropped clip is listed with its reason.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Literal

import fsspec
from pydantic import Field

from dreamrelation.configbase import StrictConfig
from dreamrelation.data.manifest import ClipRecord, DroppedClip, Manifest
from dreamrelation.data.ntu import ClipName, ClipNameError, misnamed_clip_relation, parse_file_name
from dreamrelation.data.relations import Relation
from dreamrelation.data.skeleton import SkeletonFormatError, parse_skeleton
from dreamrelation.data.video import VideoConfig, VideoError, probe_video, resample_indices

log = logging.getLogger("dreamrelation.select")


class SelectionError(ValueError):
    """Selection cannot produce a manifest: empty root, no usable clips, too few clips."""


class SelectConfig(StrictConfig):
    """Which clips of a relation to train on."""

    dataset_root: str = Field(
        ".dreamrelation/demo/ntu",
        description="NTU RGB+D root (local folder or fsspec URL) holding *_rgb.avi and *.skeleton files, searched recursively",
    )
    clips_per_relation: int = Field(20, ge=1, description="Clips to choose per relation (paper: 20-30)")
    seed: int = Field(0, description="Seed of the random choice among usable clips")
    setups: list[int] | None = Field(None, description="Keep only these setup numbers (S001-S032); all if empty")
    cameras: list[int] | None = Field(None, description="Keep only these cameras (1-3); all if empty")
    performers: list[int] | None = Field(None, description="Keep only these performers; all if empty")
    min_two_body_fraction: float = Field(
        0.5, ge=0, le=1, description="Drop clips where fewer than this fraction of frames have two tracked bodies"
    )
    max_joints_outside_frame: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Drop clips where more than this fraction of tracked skeleton joints fall outside the video "
        "frame (beyond a 10% border): skeletons that do not belong to the video, or videos resized after capture",
    )
    on_shortage: Literal["error", "take_all"] = Field(
        "error", description="If fewer usable clips exist than requested: fail, or take them all with a warning"
    )


@dataclass(frozen=True)
class _Candidate:
    clip: ClipName
    video: str | None
    skeleton: str | None


@dataclass(frozen=True)
class _Misnamed:
    """A file that looks like an NTU clip file but whose name does not parse."""

    relation: str
    path: str
    reason: str


def scan_dataset(root: str) -> tuple[dict[str, _Candidate], list[_Misnamed]]:
    """All NTU clips under a root (local or URL), keyed by clip name, and the misnamed look-alikes."""
    fs, path = fsspec.core.url_to_fs(root)
    if not fs.exists(path):
        raise SelectionError(f"dataset root {root} does not exist")
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    prefix = "" if protocol in ("file", "local") else f"{protocol}://"
    found: dict[ClipName, dict[str, str]] = {}
    misnamed: list[_Misnamed] = []
    for file_path in fs.find(path):
        try:
            clip, kind = parse_file_name(file_path)
        except ClipNameError as exc:
            relation = misnamed_clip_relation(file_path)
            if relation is not None:
                misnamed.append(_Misnamed(relation, prefix + file_path, f"name does not match SsssCcccPpppRrrrAaaa: {exc}"))
            continue
        found.setdefault(clip, {})[kind] = prefix + file_path
    if not found and not misnamed:
        raise SelectionError(
            f"dataset root {root} contains no NTU clips (expected files such as "
            "S001C001P001R001A058_rgb.avi and S001C001P001R001A058.skeleton)"
        )
    candidates = {str(c): _Candidate(c, f.get("video"), f.get("skeleton")) for c, f in sorted(found.items())}
    return candidates, misnamed


def _filter_reason(clip: ClipName, config: SelectConfig) -> str | None:
    for field, value in (("setups", clip.setup), ("cameras", clip.camera), ("performers", clip.performer)):
        allowed = getattr(config, field)
        if allowed and value not in allowed:
            return f"{field[:-1]} {value} not in the requested {field} {sorted(allowed)}"
    return None


def check_clip(candidate: _Candidate, config: SelectConfig, video: VideoConfig) -> tuple[ClipRecord | None, str | None]:
    """Open one clip's skeleton and video; return its record, or the reason it is unusable."""
    if candidate.video is None:
        return None, "no RGB video file"
    if candidate.skeleton is None:
        return None, "no .skeleton file (NTU lists some samples as missing skeletons)"
    try:
        with fsspec.open(candidate.skeleton, "r", encoding="utf-8") as handle:
            skeleton = parse_skeleton(handle, candidate.skeleton)
    except (SkeletonFormatError, UnicodeDecodeError) as exc:
        return None, f"unreadable skeleton: {exc}"
    two_bodies = (skeleton.tracked_bodies_per_frame() >= 2).mean() if skeleton.num_frames else 0.0
    if two_bodies < config.min_two_body_fraction:
        return None, f"two tracked bodies in only {two_bodies:.0%} of frames (< {config.min_two_body_fraction:.0%})"
    try:
        with fsspec.open(candidate.video, "rb") as handle:
            info = probe_video(handle, name=candidate.video)
    except VideoError as exc:
        return None, f"unreadable video: {exc}"
    outside = skeleton.fraction_outside(info.width, info.height)
    if outside > config.max_joints_outside_frame:
        return None, (
            f"skeleton does not fit the video: {outside:.0%} of tracked joints (colorX/colorY) lie outside the "
            f"{info.width}x{info.height} frame (skeleton of another clip, or a video resized after capture?)"
        )
    usable = len(resample_indices(info.frames, info.fps, video.fps))
    if usable < video.num_frames:
        return None, f"too short: {usable} frames at {video.fps:g} fps, {video.num_frames} needed"
    record = ClipRecord(
        clip_id=str(candidate.clip),
        relation=candidate.clip.relation,
        video=candidate.video,
        skeleton=candidate.skeleton,
        frames=info.frames,
        fps=info.fps,
        width=info.width,
        height=info.height,
    )
    return record, None


def select_clips(relation: Relation, config: SelectConfig, video: VideoConfig) -> Manifest:
    """Choose `clips_per_relation` usable clips of `relation`, deterministically for a seed."""
    listing, misnamed = scan_dataset(config.dataset_root)
    candidates = [c for c in listing.values() if c.clip.relation == relation.id]
    dropped = [
        DroppedClip(clip_id=m.path.rsplit("/", 1)[-1], reason=m.reason) for m in misnamed if m.relation == relation.id
    ]
    if not candidates and not dropped:
        raise SelectionError(f"dataset root {config.dataset_root} has no clips of relation {relation.id} ({relation.name})")
    usable: list[ClipRecord] = []
    for candidate in candidates:
        reason = _filter_reason(candidate.clip, config)
        record = None
        if reason is None:
            record, reason = check_clip(candidate, config, video)
        if record is None:
            dropped.append(DroppedClip(clip_id=str(candidate.clip), reason=reason or "unknown"))
        else:
            usable.append(record)
    wanted = config.clips_per_relation
    if not usable or (len(usable) < wanted and config.on_shortage == "error"):
        reasons = "; ".join(f"{d.clip_id}: {d.reason}" for d in dropped[:5])
        more = f" (+{len(dropped) - 5} more)" if len(dropped) > 5 else ""
        why = f"{len(dropped)} dropped: {reasons}{more}" if dropped else "none dropped"
        raise SelectionError(
            f"relation {relation.id} has {len(usable)} usable clip(s), {wanted} requested ({why}). "
            "Lower select.clips_per_relation or set select.on_shortage=take_all."
        )
    if len(usable) < wanted:
        log.warning("relation %s: only %d usable clips, taking all (%d requested)", relation.id, len(usable), wanted)
    rng = random.Random(f"{config.seed}:{relation.id}")
    chosen = sorted(rng.sample(usable, min(wanted, len(usable))), key=lambda r: r.clip_id)
    chosen_ids = {r.clip_id for r in chosen}
    dropped += [DroppedClip(clip_id=r.clip_id, reason="usable, not sampled") for r in usable if r.clip_id not in chosen_ids]
    return Manifest(
        relation=relation.id,
        relation_name=relation.name,
        dataset_root=config.dataset_root,
        clips=chosen,
        dropped=sorted(dropped, key=lambda d: d.clip_id),
        available=len(usable),
        config=config.model_dump(mode="json"),
    )
