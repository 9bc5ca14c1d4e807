"""The NTU file listing of a dataset root: walked once, grouped by relation, cached.

NTU RGB+D 120 holds 114,480 samples (about 229,000 files). Selecting clips for 26 relations
must not walk that tree 26 times, so `list_dataset` walks it once and keeps the result
- in this process (the demo, repeated selections, several relations in one worker), and
- in the artifact store at `cache/listings/<root hash>.json.gz` when a store is given, so the
  per-relation pipeline runs of a fan-out (separate processes, even machines) share one walk.

When is a cached listing still right?
- Local folder: while no folder of the tree has changed. Adding, removing or renaming a file
  changes its folder's modification time, so the change signal costs one `stat` per folder
  (two for the usual `nturgb+d_rgb/` + `nturgb+d_skeletons/` layout). A listing taken within
  two seconds of a folder's change is never reused (coarse file-system clocks).
- URL root (s3://, gs://, ...): object stores have no such signal; a listing is reused for
  `max_age_s` (one hour) and `refresh=True` (the stage's `force`) lists again. File identities
  (size + ETag / mtime) come from the listing itself and key the per-clip check cache.

Files are grouped by the relation their name points to (`ntu.misnamed_clip_relation`, which
accepts every valid NTU name and the misnamed look-alikes), so one relation's candidates are
found without parsing the other 113,000 names.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field

import fsspec
from fsspec.implementations.local import LocalFileSystem

from dreamrelation.data.ntu import (
    SKELETON_SUFFIX,
    VIDEO_SUFFIXES,
    ClipName,
    ClipNameError,
    misnamed_clip_relation,
    parse_file_name,
)
from dreamrelation.data.store import ArtifactStore

#: Bump when the cached listing's layout changes; older caches are then ignored.
LISTING_VERSION = 2
#: How long a listing of a URL root is reused (local folders are checked by modification time).
MAX_AGE_S = 3600.0
#: A local listing taken this soon after a folder changed is not reused (coarse mtime clocks).
RACY_NS = 2_000_000_000
#: Keys of an fsspec `info` dict that identify one version of an object, best first.
_VERSION_KEYS = ("ETag", "etag", "md5Hash", "generation", "LastModified", "last_modified", "mtime", "created")
#: A canonically named NTU file (ASCII digits): its relation is "A" + name[17:20]. Anything else
#: goes through `misnamed_clip_relation`, so grouping equals that function on every name.
_CANONICAL = re.compile(
    r"S\d{3}C\d{3}P\d{3}R\d{3}A\d{3}(?:%s)\Z" % "|".join(re.escape(s) for s in (*VIDEO_SUFFIXES, SKELETON_SUFFIX)),
    re.ASCII,
)


def relation_of(name: str) -> str | None:
    """`ntu.misnamed_clip_relation(name)`, fast for canonical names (229,000 of them at NTU-120 scale)."""
    if _CANONICAL.match(name):
        return "A" + name[17:20]
    return misnamed_clip_relation(name)


class DatasetRootError(ValueError):
    """The dataset root does not exist."""


@dataclass(frozen=True)
class ClipFiles:
    """One NTU sample: its name and its files (None where absent).

    `video_id` / `skeleton_id` identify the file versions on URL roots (size + ETag or mtime,
    from the listing); None on local folders, where the check stats the file itself.
    """

    clip: ClipName
    video: str | None
    skeleton: str | None
    video_id: str | None = None
    skeleton_id: str | None = None


@dataclass(frozen=True)
class MisnamedFile:
    """A file that looks like an NTU clip file of `relation` but whose name does not parse."""

    relation: str
    path: str
    reason: str


@dataclass
class Listing:
    """Every NTU-shaped file under a root, grouped by relation id.

    `groups[relation]` holds one `[folder index, file names, identities or None]` entry per
    folder with files of that relation; `folders` the folder paths (as fsspec names them,
    protocol prefix excluded); `signal` the `[folder, mtime_ns]` change signal of a local tree
    (None on URL roots).
    """

    root: str
    prefix: str
    folders: list[str]
    groups: dict[str, list[list]]
    files: int
    listed_at: float
    signal: list[list] | None = None
    racy: bool = False
    _parsed: dict[str, tuple[list[ClipFiles], list[MisnamedFile]]] = field(default_factory=dict, repr=False)

    def clips(self, relation: str) -> list[ClipFiles]:
        """The relation's samples, sorted by clip name."""
        return self._parse(relation)[0]

    def misnamed(self, relation: str) -> list[MisnamedFile]:
        """Files that look like the relation's clip files but are misnamed, sorted by path."""
        return self._parse(relation)[1]

    def _parse(self, relation: str) -> tuple[list[ClipFiles], list[MisnamedFile]]:
        if relation not in self._parsed:
            found: dict[ClipName, dict[str, tuple[str, str | None]]] = {}
            misnamed = []
            for folder, names, identities in self.groups.get(relation, []):
                for name, identity in zip(names, identities or [None] * len(names)):
                    path = f"{self.prefix}{self.folders[folder]}/{name}"
                    try:
                        clip, kind = parse_file_name(name)
                    except ClipNameError as exc:
                        reason = f"name does not match SsssCcccPpppRrrrAaaa: {exc}"
                        misnamed.append(MisnamedFile(relation, path, reason))
                        continue
                    found.setdefault(clip, {})[kind] = (path, identity)
            clips = []
            for clip in sorted(found):
                video, skeleton = found[clip].get("video", (None, None)), found[clip].get("skeleton", (None, None))
                clips.append(ClipFiles(clip, video[0], skeleton[0], video[1], skeleton[1]))
            self._parsed[relation] = (clips, sorted(misnamed, key=lambda m: m.path))
        return self._parsed[relation]

    # -- (de)serialisation for the store cache ---------------------------------------------------
    def to_bytes(self) -> bytes:
        record = {
            "version": LISTING_VERSION,
            "root": self.root,
            "prefix": self.prefix,
            "folders": self.folders,
            "groups": self.groups,
            "files": self.files,
            "listed_at": self.listed_at,
            "signal": self.signal,
            "racy": self.racy,
        }
        return gzip.compress(json.dumps(record, separators=(",", ":")).encode(), compresslevel=1)

    @classmethod
    def from_bytes(cls, blob: bytes) -> Listing | None:
        """The listing in a cache blob, or None for an unreadable or outdated one."""
        try:
            record = json.loads(gzip.decompress(blob))
        except (OSError, EOFError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("version") != LISTING_VERSION:
            return None
        record.pop("version")
        try:
            return cls(**record)
        except TypeError:
            return None


def _protocol_prefix(fs: fsspec.AbstractFileSystem) -> str:
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    return "" if protocol in ("file", "local") else f"{protocol}://"


def _identity(info: dict) -> str:
    """Size + version tag of an object from its fsspec info (ETag on S3, md5/generation on GCS)."""
    tag = next((info[key] for key in _VERSION_KEYS if info.get(key) not in (None, "")), "")
    return f"{info.get('size')}:{tag}"


def _walk_local(path: str) -> tuple[list[str], list[list[str]], list[list]]:
    """(folders, file names of each folder, [folder, mtime_ns] signal) of a local tree, following symlinks."""
    folders: list[str] = []
    files: list[list[str]] = []
    signal: list[list] = []
    seen: set[tuple[int, int]] = set()
    pending = [path]
    while pending:
        folder = pending.pop()
        try:
            stat = os.stat(folder)
        except OSError:
            continue
        if (stat.st_dev, stat.st_ino) in seen:
            continue  # a symlink loop, or a folder linked twice
        seen.add((stat.st_dev, stat.st_ino))
        names: list[str] = []
        folders.append(folder)
        files.append(names)
        signal.append([folder, stat.st_mtime_ns])
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir():
                    pending.append(f"{folder}/{entry.name}")
                elif entry.is_file():
                    names.append(entry.name)
            except OSError:
                continue
    return folders, files, signal


def _group(files: list[list[str]], identities: list[list[str]] | None = None) -> tuple[dict[str, list[list]], int]:
    """File names per folder (and their identities) -> relation -> [[folder, names, identities or None], ...].

    Also returns how many files are NTU-shaped. Folders and names keep their listing order here;
    `Listing.clips` sorts.
    """
    groups: dict[str, list[list]] = {}
    count = 0
    for folder, names in enumerate(files):
        found: dict[str, tuple[list[str], list[str]]] = {}
        for position, name in enumerate(names):
            relation = relation_of(name)
            if relation is not None:
                kept, ids = found.setdefault(relation, ([], []))
                kept.append(name)
                if identities is not None:
                    ids.append(identities[folder][position])
        for relation, (kept, ids) in found.items():
            groups.setdefault(relation, []).append([folder, kept, ids if identities is not None else None])
            count += len(kept)
    return groups, count


def _build(root: str) -> Listing:
    fs, path = fsspec.core.url_to_fs(root)
    if not fs.exists(path):
        raise DatasetRootError(f"dataset root {root} does not exist")
    started = time.time()
    if isinstance(fs, LocalFileSystem):
        path = path.rstrip("/") or "/"
        folders, files, signal = _walk_local(path)
        groups, count = _group(files)
        racy = any(mtime > started * 1e9 - RACY_NS for _, mtime in signal)
        return Listing(root, "", folders, groups, count, started, signal, racy)
    folder_index: dict[str, int] = {}
    files: list[list[str]] = []
    identities: list[list[str]] = []
    for file_path, info in fs.find(path, detail=True).items():
        folder, _, name = file_path.rpartition("/")
        index = folder_index.setdefault(folder, len(folder_index))
        if index == len(files):
            files.append([])
            identities.append([])
        files[index].append(name)
        identities[index].append(_identity(info))
    groups, count = _group(files, identities)
    return Listing(root, _protocol_prefix(fs), list(folder_index), groups, count, started)


def _still_valid(listing: Listing, root: str, max_age_s: float) -> bool:
    if listing.root != root or listing.racy:
        return False
    if listing.signal is None:
        return time.time() - listing.listed_at <= max_age_s
    for folder, mtime in listing.signal:
        try:
            if os.stat(folder).st_mtime_ns != mtime:
                return False
        except OSError:
            return False
    return True


def normalize_root(root: str) -> str:
    """A local root as an absolute path (the folder it names from this working directory); URLs unchanged.

    Listings are remembered and cached under this form, so a relative root run from two
    folders is two roots.
    """
    fs, path = fsspec.core.url_to_fs(root)
    return (path.rstrip("/") or "/") if isinstance(fs, LocalFileSystem) else root


def cache_key(root: str) -> str:
    """Store key of a root's cached listing."""
    return f"cache/listings/{hashlib.sha256(root.encode()).hexdigest()[:16]}.json.gz"


_MEMO: dict[str, Listing] = {}
_LOCK = threading.Lock()


def list_dataset(
    root: str, cache: ArtifactStore | None = None, refresh: bool = False, max_age_s: float = MAX_AGE_S
) -> Listing:
    """The NTU files under `root` (a local folder or fsspec URL): cached in memory and in `cache`.

    A relative local root is taken from the working directory (`normalize_root`).
    """
    root = normalize_root(root)
    with _LOCK:
        listing = None if refresh else _MEMO.get(root)
        if listing is not None and _still_valid(listing, root, max_age_s):
            return listing
        if cache is not None and not refresh:
            blob = cache.read_cache(cache_key(root))
            stored = Listing.from_bytes(blob) if blob is not None else None
            if stored is not None and _still_valid(stored, root, max_age_s):
                _MEMO[root] = stored
                return stored
        listing = _build(root)
        _MEMO[root] = listing
        if cache is not None and not listing.racy:
            cache.write_cache(cache_key(root), listing.to_bytes())
        return listing


def relation_digest(listing: Listing, relation: str) -> str:
    """A hash of the relation's files: every name (with its folder, relative to the root) and version.

    Part of the selection's fingerprint (like `data.folder.folder_digest`), so editing, adding or
    removing one of the relation's files re-selects. A file's version is its size and mtime on a
    local root (one `stat` each: an edit in place moves no folder's mtime, so the listing alone
    does not see it), and the listing's size + ETag on a URL root (as fresh as the listing).
    """
    local = listing.signal is not None
    base = len(listing.root if local else fsspec.core.url_to_fs(listing.root)[1].rstrip("/"))
    entries = sorted(
        (listing.folders[folder], name, identity)
        for folder, names, identities in listing.groups.get(relation, [])
        for name, identity in zip(names, identities or [None] * len(names))
    )
    digest = hashlib.sha256()
    for folder, name, identity in entries:
        if local:
            try:
                stat = os.stat(f"{folder}/{name}")
                identity = f"{stat.st_size}:{stat.st_mtime_ns}"
            except OSError:
                identity = "gone"
        digest.update(f"{folder[base:]}/{name}\0{identity}\0".encode())
    return digest.hexdigest()[:16]


def forget_listings() -> None:
    """Drop the in-process listings (the store cache is kept)."""
    with _LOCK:
        _MEMO.clear()
