"""The artifact store: one root (local folder or fsspec URL) holding every stage's results.

Contract (DESIGN.md "Each stage"):
- an artifact lives at a key such as `relations/A058/manifest-<fp>.json`, where <fp> is a
  fingerprint of the stage name, its config, its inputs' fingerprints and the code version;
- it is written under a temporary sibling name, moved into place, and only then is the
  completion marker `<key>.complete.json` written; readers trust an artifact only when the
  marker exists, so an interrupted write is never read as complete;
- `force=True` deletes the marker first, then recomputes.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import fsspec
import zarr
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel

import dreamrelation

MARKER_SUFFIX = ".complete.json"


class ArtifactMissingError(FileNotFoundError):
    """An artifact that is not (completely) in the store."""


class StoreNotWritableError(ValueError):
    """The artifact root cannot be written (read-only mount, a file, no permission)."""


def fingerprint(stage: str, config: Any, inputs: list[str], code_version: str) -> str:
    """Stable 16-hex-digit fingerprint of a stage run (config may be a pydantic model or JSON-able)."""
    if isinstance(config, BaseModel):
        config = config.key_dump() if hasattr(config, "key_dump") else config.model_dump(mode="json")
    payload = {
        "stage": stage,
        "config": config,
        "inputs": list(inputs),
        "code": f"{dreamrelation.__version__}/{code_version}",
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ArtifactStore:
    """Artifacts under one root; `root` is a local path or any fsspec URL (s3://, gs://, memory://)."""

    def __init__(self, root: str | os.PathLike[str]):
        root = str(root)
        self.fs, path = fsspec.core.url_to_fs(root)
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self.root_path = str(Path(path).resolve()) if self.is_local else path.rstrip("/")
        self.root = self.root_path if self.is_local else root.rstrip("/")

    def __repr__(self) -> str:
        return f"ArtifactStore({self.root!r})"

    # -- addressing --------------------------------------------------------------------------
    def path(self, key: str) -> str:
        """Filesystem path of a key (what `self.fs` understands)."""
        return f"{self.root_path}/{key.strip('/')}"

    def uri(self, key: str) -> str:
        """Full URI of a key (a plain path for local roots)."""
        return f"{self.root}/{key.strip('/')}"

    def local_path(self, key: str) -> Path:
        """Local path of a key; only for local roots."""
        if not self.is_local:
            raise ValueError(f"{self.root} is not a local folder; use fetch_local() for {key}")
        return Path(self.path(key))

    def check_writable(self) -> None:
        """Raise `StoreNotWritableError` unless a file can be created (and removed) under the root.

        Stages call this before any work, so a read-only or mistyped root fails in a second with
        one line, not after an hour of encoding.
        """
        if self.is_local and Path(self.root_path).exists() and not Path(self.root_path).is_dir():
            raise StoreNotWritableError(f"artifact root {self.root} is not writable: it is a file, not a folder")
        probe = self.path(f".write-probe-{uuid.uuid4().hex[:8]}")
        try:
            self.fs.makedirs(self.root_path, exist_ok=True)
            with self.fs.open(probe, "wb") as handle:
                handle.write(b"ok")
            self.fs.rm(probe)
        except (OSError, ValueError) as exc:  # fsspec backends raise OSError subclasses or ValueError
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
            raise StoreNotWritableError(f"artifact root {self.root} is not writable: {reason}") from None

    # -- completion ----------------------------------------------------------------------------
    def is_complete(self, key: str) -> bool:
        return self.fs.exists(self.path(key) + MARKER_SUFFIX)

    def marker(self, key: str) -> dict[str, Any]:
        """The completion record of an artifact; ArtifactMissingError if it is not complete."""
        try:
            with self.fs.open(self.path(key) + MARKER_SUFFIX, "r") as handle:
                return json.load(handle)
        except FileNotFoundError:
            raise ArtifactMissingError(f"artifact {self.uri(key)} is missing or incomplete") from None

    def require(self, key: str) -> str:
        """URI of a complete artifact, or an error naming it."""
        if not self.is_complete(key):
            raise ArtifactMissingError(
                f"artifact {self.uri(key)} is missing or incomplete: run the stage that makes it first"
            )
        return self.uri(key)

    def remove(self, key: str) -> None:
        """Delete the marker first (so the artifact stops being complete), then the data."""
        for path in (self.path(key) + MARKER_SUFFIX, self.path(key)):
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)

    @contextmanager
    def write(self, key: str, meta: dict[str, Any] | None = None) -> Iterator[str]:
        """Yield a temporary location (path for local roots, URI otherwise) to write `key` into.

        On success the temporary is moved to `key` and the marker is written last; on any
        error the temporary is deleted and nothing under `key` becomes readable.
        """
        self.remove(key)
        tmp_key = f"{key}.partial-{uuid.uuid4().hex[:8]}"
        tmp_path = self.path(tmp_key)
        self.fs.makedirs(tmp_path.rsplit("/", 1)[0], exist_ok=True)
        try:
            yield tmp_path if self.is_local else self.uri(tmp_key)
            if not self.fs.exists(tmp_path):
                raise RuntimeError(f"nothing was written for artifact {self.uri(key)}")
            self.fs.mv(tmp_path, self.path(key), recursive=True)
        except BaseException:
            if self.fs.exists(tmp_path):
                self.fs.rm(tmp_path, recursive=True)
            raise
        self._write_marker(key, meta)

    @contextmanager
    def write_in_place(
        self, key: str, meta: dict[str, Any] | None = None, cache_dir: str | os.PathLike[str] = ".dreamrelation/work"
    ) -> Iterator[Path]:
        """Yield a local folder for a resumable artifact (training runs, evaluations).

        Unlike `write`, what is already there is kept, so a rerun resumes from it (checkpoints,
        generated videos). Local roots write straight into `key`; remote roots work in a local
        mirror that is downloaded first and uploaded when the block ends, failed or not.
        The marker is written only when the block succeeds.
        """
        marker = self.path(key) + MARKER_SUFFIX
        if self.fs.exists(marker):
            self.fs.rm(marker)
        if self.is_local:
            folder = Path(self.path(key))
            folder.mkdir(parents=True, exist_ok=True)
        else:
            folder = Path(cache_dir) / hashlib.sha256(self.uri(key).encode()).hexdigest()[:16]
            folder.mkdir(parents=True, exist_ok=True)
            if self.fs.exists(self.path(key)):
                self.fs.get(self.path(key) + "/", str(folder) + "/", recursive=True)
        try:
            yield folder
        finally:
            self.sync_up(folder, key)
        self._write_marker(key, meta)

    def sync_up(self, folder: str | os.PathLike[str], key: str) -> None:
        """Upload a `write_in_place` folder's current content to `key` (nothing to do for local roots).

        Long stages call it at safe points (after each checkpoint), so a worker killed outright
        loses at most the work since then, even when the next attempt runs on another machine.
        """
        if not self.is_local:
            self.fs.put(str(folder) + "/", self.path(key) + "/", recursive=True)

    def _write_marker(self, key: str, meta: dict[str, Any] | None) -> None:
        record = {"key": key, "written_at": datetime.now(timezone.utc).isoformat(), **(meta or {})}
        with self.fs.open(self.path(key) + MARKER_SUFFIX, "w") as handle:
            json.dump(record, handle, indent=2, default=str)

    # -- small JSON artifacts ----------------------------------------------------------------
    def write_json(self, key: str, obj: Any, meta: dict[str, Any] | None = None) -> str:
        with self.write(key, meta) as tmp:
            with fsspec.open(tmp, "w") as handle:
                json.dump(obj, handle, indent=2, default=str)
        return self.uri(key)

    def read_json(self, key: str) -> Any:
        self.require(key)
        with self.fs.open(self.path(key), "r") as handle:
            return json.load(handle)

    # -- caches (no completion marker: a missing or unreadable entry only means "recompute") ----
    def read_cache(self, key: str) -> bytes | None:
        """The bytes of a cache entry such as `cache/listings/<hash>.json.gz`, or None if absent/unreadable."""
        try:
            with self.fs.open(self.path(key), "rb") as handle:
                return handle.read()
        except (OSError, ValueError):  # FileNotFoundError included; fsspec backends may raise ValueError
            return None

    def write_cache(self, key: str, data: bytes) -> bool:
        """Replace a cache entry whole (local: temporary sibling, then rename; object stores: one PUT).

        Returns False instead of raising when the store cannot be written: a cache is an optimisation.
        """
        target = self.path(key)
        try:
            self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            if not self.is_local:
                with self.fs.open(target, "wb") as handle:
                    handle.write(data)
                return True
            tmp = Path(f"{target}.partial-{uuid.uuid4().hex[:8]}")
            try:
                tmp.write_bytes(data)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            return True
        except (OSError, ValueError):
            return False

    def list(self, prefix: str) -> list[str]:
        """Keys of complete artifacts directly under a prefix."""
        base = self.path(prefix)
        if not self.fs.exists(base):
            return []
        keys = []
        for entry in self.fs.ls(base, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if name.endswith(MARKER_SUFFIX):
                keys.append(f"{prefix.strip('/')}/{name[: -len(MARKER_SUFFIX)]}")
        return sorted(keys)


def zarr_location(location: str) -> Any:
    """What `zarr.open_group` accepts for a path or URL: the path itself, or an FsspecStore."""
    if "://" in location and not location.startswith("file://"):
        return zarr.storage.FsspecStore.from_url(location, read_only=False)
    return location.removeprefix("file://")


def fetch_local(uri: str, cache_dir: str | os.PathLike[str] = ".dreamrelation/cache") -> Path:
    """A local path for a file URI: itself if local, else a cached download (for video decoders)."""
    fs, path = fsspec.core.url_to_fs(uri)
    if isinstance(fs, LocalFileSystem):
        return Path(path)
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    target = Path(cache_dir) / digest / Path(path).name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".partial")
        fs.get(path, str(tmp))
        tmp.replace(target)
    return target
