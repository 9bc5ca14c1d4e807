"""select_clips: choose k training clips of one relation from an NTU RGB+D folder (DESIGN.md).

Lists the dataset root once (local folder or fsspec URL; `data.listing`, cached per root),
keeps the requested relation's `SsssCcccPpppRrrrAaaa` clips, applies the
setup/camera/performer filters, then walks the remaining candidates in a seeded random order
(a hash of seed, relation and clip name: independent of listing order, and adding a clip to
the dataset does not reshuffle the others) and checks each: a skeleton with two tracked bodies
in enough frames, a readable video long enough for the target clip, a skeleton that fits the
video frame. The first k usable clips of that order are chosen, a uniformly random k-subset of
the usable clips.

Lazy (default): checking stops once k usable clips are found; the manifest lists the clips
checked, why each checked-but-unusable one was dropped, and how many candidates were not
checked. `check_all: true` checks every candidate (the exact `available` count, every faulty
clip named) and chooses the same clips.

A check stores its measurements (two-body fraction, video size/length, joints outside the
frame, or the read error) in the artifact store, keyed by the files' path + size + mtime (or
ETag on object stores): changing k, the seed or a threshold re-reads nothing already checked.
URL roots are checked with parallel threads.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Literal, TypeVar

import fsspec
from pydantic import Field

from dreamrelation.configbase import StrictConfig
from dreamrelation.data.folder import (
    MASKS_DIR,
    MASKS_NPZ,
    FolderClip,
    FolderDatasetError,
    FolderRelation,
    MaskFileError,
    SidecarError,
    check_start,
    check_user_masks,
    list_folder_dataset,
    read_sidecar,
)
from dreamrelation.data.listing import ClipFiles, DatasetRootError, Listing, list_dataset
from dreamrelation.data.manifest import ClipRecord, DroppedClip, Manifest
from dreamrelation.data.ntu import ClipName
from dreamrelation.data.relations import Relation, read_user_table
from dreamrelation.data.skeleton import SkeletonFormatError, parse_skeleton_bytes
from dreamrelation.data.store import ArtifactStore
from dreamrelation.data.video import VideoConfig, VideoError, probe_video, resample_indices

log = logging.getLogger("dreamrelation.select")
Candidate = TypeVar("Candidate")


class SelectionError(ValueError):
    """Selection cannot produce a manifest: empty root, no usable clips, too few clips."""


class SelectConfig(StrictConfig):
    """Which clips of a relation to train on."""

    added_later: ClassVar[dict[str, Any]] = {"source": "ntu", "windows_file": None, "require_masks": False}

    source: Literal["ntu", "folder"] = Field(
        "ntu",
        description="ntu: an NTU RGB+D tree; folder: your own videos, <dataset_root>/<relation>/<clip>.mp4 with "
        "optional <clip>.txt captions and <clip>.masks.npz masks (README: Your own videos)",
    )
    dataset_root: str = Field(
        ".dreamrelation/demo/ntu",
        description="Dataset root (local folder or fsspec URL): an NTU RGB+D tree of *_rgb.avi and *.skeleton files "
        "(searched recursively), or with source=folder one sub-folder of videos per relation",
    )
    windows_file: str | None = Field(
        None,
        description="Folder datasets: optional CSV with columns clip,start_seconds (clip as <relation folder>/<clip> "
        "or <clip>) saying where each clip's window starts; overrides sidecar front matter; default: the first frames",
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
    check_all: bool = Field(
        False,
        description="Check every candidate clip (exact 'available' count, every faulty clip named) instead of "
        "stopping once clips_per_relation usable clips are found; the same clips are chosen either way",
    )
    require_masks: bool = Field(
        False,
        description="Folder datasets: a clip is usable only when its own masks (<clip>.masks.npz or <clip>.masks/) "
        "fit its video (frame count, size, two subjects), so a clip with missing or unfit masks is replaced by the "
        "next usable one. Always on with masks.backend=provided",
    )


#: Bump when what `measure_clip` records changes; older cached checks are then ignored.
CHECK_VERSION = 1
#: Threads checking clips at once: object stores are latency-bound; on a local folder the check is
#: CPU-bound under the GIL (skeleton parsing), and a second thread measured no faster on 2 cores.
URL_WORKERS = 16
LOCAL_WORKERS = 1


def _filter_reason(clip: ClipName, config: SelectConfig) -> str | None:
    for field, value in (("setups", clip.setup), ("cameras", clip.camera), ("performers", clip.performer)):
        allowed = getattr(config, field)
        if allowed and value not in allowed:
            return f"{field[:-1]} {value} not in the requested {field} {sorted(allowed)}"
    return None


def draw_order(clips: list[Candidate], seed: int, relation: str, name: Callable[[Candidate], str]) -> list[Candidate]:
    """The seeded random order candidates are checked in: by a hash of seed, relation and clip name."""

    def key(clip: Candidate) -> tuple[bytes, str]:
        text = name(clip)
        return hashlib.blake2b(f"{seed}:{relation}:{text}".encode(), digest_size=16).digest(), text

    return sorted(clips, key=key)


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def measure_clip(files: ClipFiles, local: bool) -> dict[str, Any]:
    """What selection decides on, measured once per file version and independent of the thresholds.

    Keys: `skeleton_error`, or `two_body_fraction` and then `video_error`, or `video`
    ([frames, fps, width, height]) and `outside` (fraction of tracked joints outside the frame).
    `transient` marks a read failure (file gone, permission, network) that is not cached.
    Clips without one of their files have nothing to measure.
    """
    if files.video is None or files.skeleton is None:
        return {}
    try:
        if local:
            with open(files.skeleton, "rb") as handle:
                data = handle.read()
        else:
            fs, path = fsspec.core.url_to_fs(files.skeleton)
            data = fs.cat_file(path)
    except OSError as exc:
        return {"skeleton_error": f"cannot read {files.skeleton}: {_os_reason(exc)}", "transient": True}
    try:
        skeleton = parse_skeleton_bytes(data, files.skeleton)
    except (SkeletonFormatError, UnicodeDecodeError) as exc:
        return {"skeleton_error": str(exc)}
    two_bodies = float((skeleton.tracked_bodies_per_frame() >= 2).mean()) if skeleton.num_frames else 0.0
    facts: dict[str, Any] = {"two_body_fraction": two_bodies}
    try:
        if local:
            info = probe_video(files.video)
        else:
            with fsspec.open(files.video, "rb", block_size=2**18) as handle:  # the header, not the whole video
                info = probe_video(handle, name=files.video)
    except VideoError as exc:
        facts["video_error"] = str(exc)
        return facts
    except OSError as exc:
        facts.update(video_error=f"cannot read video {files.video}: {_os_reason(exc)}", transient=True)
        return facts
    facts["video"] = [info.frames, info.fps, info.width, info.height]
    facts["outside"] = skeleton.fraction_outside(info.width, info.height)
    return facts


def clip_verdict(
    files: ClipFiles, facts: dict[str, Any], config: SelectConfig, video: VideoConfig
) -> tuple[ClipRecord | None, str | None]:
    """The clip's record, or the reason it is unusable, from its measurements and the thresholds."""
    if files.video is None:
        return None, "no RGB video file"
    if files.skeleton is None:
        return None, "no .skeleton file (NTU lists some samples as missing skeletons)"
    if "skeleton_error" in facts:
        return None, f"unreadable skeleton: {facts['skeleton_error']}"
    two_bodies = facts["two_body_fraction"]
    if two_bodies < config.min_two_body_fraction:
        return None, f"two tracked bodies in only {two_bodies:.0%} of frames (< {config.min_two_body_fraction:.0%})"
    if "video_error" in facts:
        return None, f"unreadable video: {facts['video_error']}"
    frames, fps, width, height = facts["video"]
    outside = facts["outside"]
    if outside > config.max_joints_outside_frame:
        return None, (
            f"skeleton does not fit the video: {outside:.0%} of tracked joints (colorX/colorY) lie outside the "
            f"{width}x{height} frame (skeleton of another clip, or a video resized after capture?)"
        )
    usable = len(resample_indices(frames, fps, video.fps))
    if usable < video.num_frames:
        return None, f"too short: {usable} frames at {video.fps:g} fps, {video.num_frames} needed"
    record = ClipRecord(
        clip_id=str(files.clip),
        relation=files.clip.relation,
        video=files.video,
        skeleton=files.skeleton,
        frames=frames,
        fps=fps,
        width=width,
        height=height,
    )
    return record, None


def check_clip(
    files: ClipFiles, config: SelectConfig, video: VideoConfig, local: bool | None = None
) -> tuple[ClipRecord | None, str | None]:
    """Open one clip's skeleton and video; return its record, or the reason it is unusable (no cache)."""
    if local is None:
        local = "://" not in (files.skeleton or files.video or "")
    return clip_verdict(files, measure_clip(files, local), config, video)


class ClipChecks:
    """Measurements of one relation's clips, read from and written back to the artifact store.

    One gzipped JSON per dataset root and relation (`cache/select-checks/<root hash>/<relation>.json.gz`),
    read once and written once per selection. An entry is reused only while both files are the
    same version: local files by size + mtime (one `stat` each), objects by the listing's
    size + ETag.
    """

    def __init__(self, listing: Listing, relation: str, store: ArtifactStore | None):
        self.local = listing.signal is not None
        self.store = store
        self.key = f"cache/select-checks/{hashlib.sha256(listing.root.encode()).hexdigest()[:16]}/{relation}.json.gz"
        self.entries: dict[str, dict[str, Any]] = {}
        self.changed = False
        self.hits = self.measured = 0
        self._lock = threading.Lock()
        if store is not None:
            blob = store.read_cache(self.key)
            try:
                record = json.loads(gzip.decompress(blob)) if blob is not None else {}
            except (OSError, EOFError, ValueError):
                record = {}
            if isinstance(record, dict) and record.get("version") == CHECK_VERSION:
                self.entries = record.get("clips", {})

    def _identity(self, path: str | None, listed: str | None) -> str | None:
        if path is None:
            return None
        if not self.local:
            return listed
        try:
            stat = os.stat(path)
        except OSError:
            return None
        return f"{stat.st_size}:{stat.st_mtime_ns}"

    def facts(self, files: ClipFiles) -> dict[str, Any]:
        """The clip's measurements: cached when its files are unchanged, else measured (and cached)."""
        if files.video is None or files.skeleton is None:
            return {}  # nothing to open
        ident = [files.video, self._identity(files.video, files.video_id),
                 files.skeleton, self._identity(files.skeleton, files.skeleton_id)]
        clip_id = str(files.clip)
        cached = self.entries.get(clip_id)
        if cached is not None and cached.get("files") == ident:
            with self._lock:
                self.hits += 1
            return cached["facts"]
        facts = measure_clip(files, self.local)
        with self._lock:
            self.measured += 1
            if facts and not facts.get("transient") and None not in ident:
                self.entries[clip_id] = {"files": ident, "facts": facts}
                self.changed = True
        return facts

    def save(self) -> None:
        if self.store is None or not self.changed:
            return
        blob = gzip.compress(json.dumps({"version": CHECK_VERSION, "clips": self.entries}).encode(), compresslevel=1)
        if not self.store.write_cache(self.key, blob):
            log.warning("could not write the selection check cache %s", self.store.uri(self.key))
        self.changed = False


def _walk(
    order: list[Candidate],
    wanted: int,
    check_all: bool,
    check: Callable[[Candidate], tuple[ClipRecord | None, str | None]],
    workers: int,
) -> list[tuple[Candidate, ClipRecord | None, str | None]]:
    """Check candidates in `order` until `wanted` are usable (or all, with check_all).

    Checks run in batches (`workers` threads); results are taken in `order` and cut after the
    `wanted`-th usable clip, so the outcome does not depend on the number of threads.
    """
    outcomes: list[tuple[Candidate, ClipRecord | None, str | None]] = []
    usable = position = 0
    pool = ThreadPoolExecutor(workers, thread_name_prefix="select") if workers > 1 else None
    try:
        while position < len(order) and (check_all or usable < wanted):
            size = len(order) - position if check_all else max(wanted - usable, workers)
            batch = order[position : position + size]
            results = pool.map(check, batch) if pool is not None else map(check, batch)
            for files, (record, reason) in zip(batch, results):
                outcomes.append((files, record, reason))
                usable += record is not None
            position += len(batch)
    finally:
        if pool is not None:
            pool.shutdown()
    if check_all:
        return outcomes
    kept, usable = [], 0
    for outcome in outcomes:
        if usable == wanted:
            break
        kept.append(outcome)
        usable += outcome[1] is not None
    return kept


def select_clips(
    relation: Relation,
    config: SelectConfig,
    video: VideoConfig,
    store: ArtifactStore | None = None,
    refresh: bool = False,
    workers: int | None = None,
) -> Manifest:
    """Choose `clips_per_relation` usable clips of `relation` from the configured source (ntu or folder)."""
    if config.source == "folder":
        return select_folder_clips(relation, config, video)
    return select_ntu_clips(relation, config, video, store, refresh, workers)


def select_ntu_clips(
    relation: Relation,
    config: SelectConfig,
    video: VideoConfig,
    store: ArtifactStore | None = None,
    refresh: bool = False,
    workers: int | None = None,
) -> Manifest:
    """Choose `clips_per_relation` usable NTU clips of `relation`, deterministically for a seed.

    `store` holds the listing and check caches (none without it); `refresh` lists the dataset
    again even if a cached listing is still trusted; `workers` overrides the number of checking
    threads (default: URL_WORKERS on URL roots, LOCAL_WORKERS on local folders).
    """
    try:
        listing = list_dataset(config.dataset_root, cache=store, refresh=refresh)
    except DatasetRootError as exc:
        raise SelectionError(str(exc)) from None
    if not listing.files:
        raise SelectionError(
            f"dataset root {config.dataset_root} contains no NTU clips (expected files such as "
            "S001C001P001R001A058_rgb.avi and S001C001P001R001A058.skeleton)"
        )
    candidates = listing.clips(relation.id)
    dropped = [DroppedClip(clip_id=m.path.rsplit("/", 1)[-1], reason=m.reason) for m in listing.misnamed(relation.id)]
    if not candidates and not dropped:
        raise SelectionError(f"dataset root {config.dataset_root} has no clips of relation {relation.id} ({relation.name})")
    eligible = []
    for files in candidates:
        reason = _filter_reason(files.clip, config)
        if reason is None:
            eligible.append(files)
        else:
            dropped.append(DroppedClip(clip_id=str(files.clip), reason=reason))

    checks = ClipChecks(listing, relation.id, store)
    workers = workers or (LOCAL_WORKERS if checks.local else URL_WORKERS)
    try:
        outcomes = _walk(
            draw_order(eligible, config.seed, relation.id, lambda files: str(files.clip)),
            config.clips_per_relation,
            config.check_all,
            lambda files: clip_verdict(files, checks.facts(files), config, video),
            workers,
        )
    finally:
        checks.save()
    log.info(
        "relation %s: %d candidate(s), %d checked (%d from the check cache), %d not checked, %d usable",
        relation.id, len(candidates), len(outcomes), checks.hits, len(eligible) - len(outcomes),
        sum(record is not None for _, record, _ in outcomes),
    )
    checked = [(str(files.clip), record, reason) for files, record, reason in outcomes]
    return build_manifest(relation, config, checked, dropped, len(candidates), len(eligible))


def build_manifest(
    relation: Relation,
    config: SelectConfig,
    checked: list[tuple[str, ClipRecord | None, str | None]],
    dropped: list[DroppedClip],
    candidates: int,
    eligible: int,
) -> Manifest:
    """The manifest from the checked candidates (in draw order): the first k usable ones are chosen.

    Raises SelectionError when no clip is usable, or fewer than k with on_shortage=error.
    """
    usable = [record for _, record, _ in checked if record is not None]
    dropped = dropped + [DroppedClip(clip_id=clip, reason=reason or "unknown") for clip, record, reason in checked
                         if record is None]
    dropped.sort(key=lambda d: d.clip_id)
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
    chosen = usable[:wanted]
    dropped += [DroppedClip(clip_id=r.clip_id, reason="usable, not sampled") for r in usable[wanted:]]
    return Manifest(
        relation=relation.id,
        relation_name=relation.name,
        dataset_root=config.dataset_root,
        clips=sorted(chosen, key=lambda r: r.clip_id),
        dropped=sorted(dropped, key=lambda d: d.clip_id),
        available=len(usable),
        check_all=config.check_all,
        candidates=candidates,
        checked=[clip for clip, _, _ in checked],
        unchecked=eligible - len(checked),
        config=config.model_dump(mode="json"),
    )


# --------------------------------------------------------------------------- own-folder datasets (issue 12)


def load_windows(path: str | None) -> dict[str, float]:
    """`select.windows_file` rows: clip (`<relation folder>/<clip>` or `<clip>`) -> start_seconds."""
    if path is None:
        return {}
    rows = read_user_table(path, "windows file", SelectionError)
    if not path.lower().endswith(".csv") or not isinstance(rows, list):
        raise SelectionError(f"windows file {path}: use a CSV file with the columns clip,start_seconds")
    if rows and not {"clip", "start_seconds"} <= set(rows[0]):
        raise SelectionError(f"windows file {path}: the CSV header must have the columns clip,start_seconds")
    windows: dict[str, float] = {}
    for number, row in enumerate(rows, start=2):
        clip = (row["clip"] or "").strip()
        try:
            windows[clip] = check_start(row["start_seconds"], f"windows file {path}, line {number} ({clip})")
        except SidecarError as exc:
            raise SelectionError(str(exc)) from None
    return windows


def folder_clip_verdict(
    clip: FolderClip,
    relation: FolderRelation,
    template: str,
    windows: dict[str, float],
    video: VideoConfig,
    require_masks: bool = False,
) -> tuple[ClipRecord | None, str | None]:
    """A folder clip's record, or why it is unusable: bad sidecar, no caption, unreadable or too short.

    With `require_masks`, also a clip without masks or whose masks do not fit the video (`check_user_masks`).
    """
    try:
        caption, front = read_sidecar(clip)
    except (SidecarError, OSError, UnicodeDecodeError) as exc:
        return None, f"unreadable caption sidecar: {exc}"
    if not caption and not template:
        sidecar = f"{clip.clip_id}.txt beside the video is empty" if clip.caption_file else f"no {clip.clip_id}.txt beside the video"
        return None, f"no caption: {sidecar} and no caption template for relation {relation.id!r} in relations_file"
    start = windows.get(f"{relation.name}/{clip.clip_id}", windows.get(clip.clip_id, front.get("start_seconds", 0.0)))
    try:
        if "://" in clip.video:
            with fsspec.open(clip.video, "rb", block_size=2**18) as handle:
                info = probe_video(handle, name=clip.video)
        else:
            info = probe_video(clip.video)
    except (VideoError, OSError) as exc:
        return None, f"unreadable video: {exc}"
    usable = len(resample_indices(info.frames, info.fps, video.fps, start))
    if usable < video.num_frames:
        after = f" after start_seconds {start:g}" if start else ""
        return None, (
            f"too short: {info.frames} frames at {info.fps:g} fps give {usable} frames at {video.fps:g} fps{after}, "
            f"{video.num_frames} needed"
        )
    if require_masks:
        if clip.masks is None:
            return None, f"no masks: no {clip.clip_id}{MASKS_NPZ} or {clip.clip_id}{MASKS_DIR}/ beside the video"
        try:
            check_user_masks(clip.masks, clip.clip_id, info.frames, info.height, info.width)
        except MaskFileError as exc:
            return None, f"masks do not fit: {exc}"
    record = ClipRecord(
        clip_id=clip.clip_id, relation=relation.id, video=clip.video, frames=info.frames, fps=info.fps,
        width=info.width, height=info.height, start_seconds=start, masks=clip.masks, caption=caption or None,
    )
    return record, None


def select_folder_clips(relation: Relation, config: SelectConfig, video: VideoConfig) -> Manifest:
    """Choose `clips_per_relation` usable clips from `<dataset_root>/<relation folder>/` (issue 12).

    The same seeded order, lazy checking and shortage rules as NTU selection. A clip's record
    carries its sidecar caption (None without one: write_captions fills the relation's caption
    template), its window start and its user masks file, checked against the video with
    `config.require_masks` (masks.backend=provided).
    """
    try:
        listing = list_folder_dataset(config.dataset_root)
    except FolderDatasetError as exc:
        raise SelectionError(str(exc)) from None
    folder = listing.relations.get(relation.id)
    if folder is None:
        known = ", ".join(f"{r.id} ({r.name})" for r in listing.relations.values()) or "none"
        raise SelectionError(
            f"dataset root {config.dataset_root} has no folder of videos for relation {relation.id!r}; "
            f"relations found: {known}"
        )
    windows = load_windows(config.windows_file)
    dropped = [DroppedClip(clip_id=name, reason=reason) for name, reason in folder.ignored.items()]
    outcomes = _walk(
        draw_order(folder.clips, config.seed, relation.id, lambda clip: clip.clip_id),
        config.clips_per_relation,
        config.check_all,
        lambda clip: folder_clip_verdict(clip, folder, relation.caption, windows, video, config.require_masks),
        LOCAL_WORKERS if "://" not in config.dataset_root else URL_WORKERS,
    )
    log.info("relation %s: %d clip(s) in %s, %d checked, %d usable", relation.id, len(folder.clips), folder.path,
             len(outcomes), sum(record is not None for _, record, _ in outcomes))
    checked = [(clip.clip_id, record, reason) for clip, record, reason in outcomes]
    return build_manifest(relation, config, checked, dropped, len(folder.clips), len(folder.clips))
