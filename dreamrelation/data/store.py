"""The artifact store: one root (local folder or fsspec URL) holding every stage's results.

Contract (DESIGN.md "Each stage"):
- an artifact lives at a key such as `relations/A058/manifest-<fp>.json`, where <fp> is a
  fingerprint of the stage name, its config, its inputs' fingerprints and the code version;
- it is written under a temporary sibling name, moved into place, and only then is the
  completion marker `<key>.complete.json` written; readers trust an artifact only when the
  marker exists, so an interrupted write is never read as complete;
- `force=True` deletes the marker first, then recomputes;
- one run at a time builds an artifact: `lock(key)` holds `<key>.lock` while it works (an
  advisory `flock` on local roots, released by the kernel however the process ends; a lease
  renewed by a heartbeat on object stores), and a second run is refused with the holder's name.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import socket
import threading
import time
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
LOCK_SUFFIX = ".lock"
#: An object-store lease lasts this long unless its holder renews it (every third of it).
LEASE_SECONDS = 120.0
#: Errors of a full or read-only disk: the user must free space, not read a traceback.
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


class ArtifactMissingError(FileNotFoundError):
    """An artifact that is not (completely) in the store."""


class StoreNotWritableError(ValueError):
    """The artifact root cannot be written (read-only mount, a file, no permission)."""


class ArtifactLockedError(ValueError):
    """Another run is building the artifact right now."""


class DiskFullError(OSError):
    """A stage could not write: the disk (or quota) is full, or the file system is read-only."""


def holder_record(holder: str) -> dict[str, Any]:
    """Who holds a lock: the run's name, this process and host, and since when (UTC)."""
    return {
        "holder": holder,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def disk_full_error(exc: BaseException) -> OSError | None:
    """The `OSError` of a full disk (or quota, or read-only file system) in `exc`'s chain, if any.

    Libraries wrap it (zarr, numcodecs) or keep only its text (torch.save's RuntimeError), so the
    chain is walked and the text is read too.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            return exc
        if "No space left on device" in str(exc):
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        exc = exc.__cause__ or exc.__context__
    return None


def _read_record(path: Path) -> dict[str, Any] | None:
    """A local lock file's holder record; None while its holder has not written it yet."""
    try:
        return json.loads(path.read_text() or "null")
    except (OSError, ValueError):
        return None


def describe_holder(record: dict[str, Any] | None) -> str:
    """`run 'a058-encode-latents-1a2b' (pid 4242 on gpu-1, since 2026-12-05T13:01:02+00:00)`."""
    if not record:
        return "another run (it has just started)"
    return f"run {record.get('holder')!r} (pid {record.get('pid')} on {record.get('host')}, since {record.get('since')})"


#: Lock files this process holds (path -> remove), so an interrupted CLI can drop them on its way out.
_HELD_LOCKS: dict[str, Any] = {}


def release_held_locks() -> None:
    """Remove every lock file this process holds (the CLI calls it when Ctrl-C ends it at once)."""
    for release in list(_HELD_LOCKS.values()):
        try:
            release()
        except (OSError, ValueError):  # best effort: a lease left behind expires by itself
            pass
    _HELD_LOCKS.clear()


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

    # -- one writer per artifact ---------------------------------------------------------------
    @contextmanager
    def lock(self, key: str, holder: str) -> Iterator[None]:
        """Hold `key`'s lock while the block runs; `ArtifactLockedError` names the run holding it.

        `holder` names this run in that message (e.g. the Prefect flow run's name).
        """
        with (self._local_lock if self.is_local else self._lease)(key, holder_record(holder)):
            yield

    @contextmanager
    def _local_lock(self, key: str, record: dict[str, Any]) -> Iterator[None]:
        path = Path(self.path(key) + LOCK_SUFFIX)
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ArtifactLockedError(
                    f"artifact {self.uri(key)} is being built by {describe_holder(_read_record(path))}; "
                    "wait for that run to end (or stop it), then run again"
                ) from None
            try:  # the holder before us may have removed the file after we opened it: retry on the new one
                same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:
                break
            os.close(fd)
        _HELD_LOCKS[str(path)] = lambda: path.unlink(missing_ok=True)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(record).encode())
            yield
        finally:
            _HELD_LOCKS.pop(str(path), None)
            path.unlink(missing_ok=True)  # while still locked, so no one takes a removed file
            os.close(fd)

    @contextmanager
    def _lease(self, key: str, record: dict[str, Any]) -> Iterator[None]:
        """Object stores have no locks: a lease file that the holder renews while it works.

        A lease not renewed for `LEASE_SECONDS` (its holder died) is taken over. Two runs that
        start within the same second can both write a lease; each reads it back and only the
        one whose lease is there goes on (the object store keeps the last write).
        """
        path = self.path(key) + LOCK_SUFFIX
        token = uuid.uuid4().hex
        current = self._read_lease(path)
        if current is not None and current.get("expires", 0) > time.time():
            raise ArtifactLockedError(
                f"artifact {self.uri(key)} is being built by {describe_holder(current)} (a lease on the "
                f"object store, renewed every {LEASE_SECONDS / 3:.0f} s); wait for that run to end, then run again"
            )
        self._write_lease(path, {**record, "token": token})
        time.sleep(0.2)
        current = self._read_lease(path)
        if current is None or current.get("token") != token:
            raise ArtifactLockedError(f"artifact {self.uri(key)} is being built by {describe_holder(current)}")
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(LEASE_SECONDS / 3):
                self._write_lease(path, {**record, "token": token})

        heartbeat = threading.Thread(target=renew, name=f"lease {key}", daemon=True)
        heartbeat.start()
        _HELD_LOCKS[path] = lambda: self.fs.rm(path)
        try:
            yield
        finally:
            _HELD_LOCKS.pop(path, None)
            stop.set()
            heartbeat.join()
            current = self._read_lease(path)
            if current is not None and current.get("token") == token:
                self.fs.rm(path)

    def _read_lease(self, path: str) -> dict[str, Any] | None:
        try:
            with self.fs.open(path, "r") as handle:
                return json.load(handle)
        except (OSError, ValueError):  # absent, or torn by a concurrent write
            return None

    def _write_lease(self, path: str, record: dict[str, Any]) -> None:
        with self.fs.open(path, "w") as handle:
            json.dump({**record, "expires": time.time() + LEASE_SECONDS}, handle)

    def remove_partials(self, key: str) -> None:
        """Delete what interrupted writers of `key` left (`<key>.partial-*`); call it holding the lock."""
        parent, name = self.path(key).rsplit("/", 1)
        if not self.fs.exists(parent):
            return
        for entry in self.fs.ls(parent, detail=False):
            if entry.rstrip("/").rsplit("/", 1)[-1].startswith(f"{name}.partial-"):
                self.fs.rm(entry, recursive=True)

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
