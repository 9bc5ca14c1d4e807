"""Prefect UI artifacts that any stage task can publish: pictures, progress bars, store links.

Artifact keys must be lower-case letters, digits and dashes (`artifact_key` makes one from
any parts). Every helper is a no-op outside a Prefect flow or task run, so the pure stage code
and its unit tests never need a Prefect server.

Pictures go to the UI as `data:image/...;base64,` URIs (image artifacts, or `![](data:...)`
inside markdown and markdown table cells): the browser shows them wherever the server and the
worker are, while a `file://` link to the worker's disk never opens from a web page. The
pictures themselves are made in `data/previews.py`.
"""

from __future__ import annotations

import re
import time
from pathlib import PurePosixPath
from types import TracebackType
from uuid import UUID

import numpy as np
from prefect.artifacts import (
    create_image_artifact,
    create_link_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.context import FlowRunContext, TaskRunContext

from dreamrelation.data.previews import MAX_IMAGE_BYTES, format_seconds, image_data_uri

_NOT_KEY = re.compile(r"[^a-z0-9]+")
#: Roots a person's browser (or cloud console) can follow; a link artifact is published only for these.
REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "az://", "abfs://", "http://", "https://")


def artifact_key(*parts: str) -> str:
    """A valid Prefect artifact key from free text: `('A058', 'make_masks')` -> `a058-make-masks`."""
    key = _NOT_KEY.sub("-", "-".join(parts).lower()).strip("-")
    if not key:
        raise ValueError(f"cannot make an artifact key from {parts!r}")
    return key


def in_prefect_run() -> bool:
    """True inside a flow or task run (where artifacts attach to the run)."""
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def store_link(uri: str) -> str:
    """A clickable link for an artifact URI: local paths become `file://` URLs, URLs stay."""
    if "://" in uri:
        return uri
    return PurePosixPath(uri).as_uri() if uri.startswith("/") else uri


def is_remote(uri: str) -> bool:
    """True for object-store and web URLs (`s3://`, `gs://`, `http(s)://`, ...), false for local paths."""
    return uri.lower().startswith(REMOTE_SCHEMES)


def publish_store_link(
    stage: str, relation: str, uri: str, description: str = "", skipped: bool = False
) -> UUID | None:
    """A link artifact `<relation>-<stage>-store` to a stage's artifact, for remote roots only.

    A local path would become a `file://` link that no browser opens (and that names the worker's
    disk); local URIs are shown as text in the stage's log and the pipeline summary instead.
    """
    if not in_prefect_run() or not is_remote(uri):
        return None
    status = "reused (already complete)" if skipped else "built"
    return create_link_artifact(
        key=artifact_key(relation, stage, "store"),
        link=store_link(uri),
        link_text=uri,
        description=description or f"{stage} artifact of {relation}: {status}",
    )


def markdown_image(uri: str, alt: str = "") -> str:
    """Markdown for an image (works inside a table cell); `|` and brackets in `alt` are dropped."""
    alt = " ".join(re.sub(r"[\[\]|\n]", " ", alt).split())
    return f"![{alt}]({uri})"


def publish_image(key: str, image: np.ndarray, description: str, max_bytes: int = MAX_IMAGE_BYTES) -> UUID | None:
    """An image artifact holding `image` (RGB uint8) as a JPEG `data:` URI of at most `max_bytes`."""
    if not in_prefect_run():
        return None
    return create_image_artifact(
        image_url=image_data_uri(image, "jpeg", max_bytes), key=artifact_key(key), description=description
    )


def cell(text: object) -> str:
    """Text safe inside a markdown table cell (no pipes, no line breaks)."""
    return str(text).replace("|", "/").replace("\n", " ")


class Progress:
    """A progress artifact for a long loop (clips encoded, masks done, training steps).

    ```python
    with Progress(artifact_key("a058", "train-steps"), total=steps, description="training steps") as bar:
        for step in range(steps):
            ...
            bar.update(step + 1, note=f"loss {format_sig(loss)}")
    ```
    The description reads `training steps: 12/30 · loss 0.1234 · elapsed 0:42 · ETA 1:03` (the ETA
    from the rate since the first update, so a resumed run's earlier steps do not count).
    Updates reach the server at most every `min_interval` seconds (and always at 100 %), so a
    tight loop costs no more than a few API calls. Outside a Prefect run it does nothing.
    """

    def __init__(self, key: str, total: int, description: str = "", min_interval: float = 2.0):
        if total < 0:
            raise ValueError(f"progress total must be >= 0, got {total}")
        self.key = artifact_key(key)
        self.total = total
        self.description = description
        self.min_interval = min_interval
        self.done = 0
        self.note = ""
        self._artifact_id: UUID | None = None
        self._last_sent = 0.0
        self._started = time.monotonic()
        self._base: tuple[float, int] | None = None  # (time, done) at the first update

    @property
    def percent(self) -> float:
        return 100.0 if self.total == 0 else min(100.0, 100.0 * self.done / self.total)

    def timing(self) -> tuple[float, float | None]:
        """(seconds since start, estimated seconds left or None while unknown)."""
        now = time.monotonic()
        eta = None
        if self.done >= self.total:
            eta = 0.0
        elif self._base is not None and self.done > self._base[1] and now > self._base[0]:
            rate = (self.done - self._base[1]) / (now - self._base[0])
            eta = (self.total - self.done) / rate
        return now - self._started, eta

    def describe(self) -> str:
        parts = [f"{self.description}: {self.done}/{self.total}".lstrip(": ")]
        if self.note:
            parts.append(self.note)
        elapsed, eta = self.timing()
        parts.append(f"elapsed {format_seconds(elapsed)}")
        if eta is not None and self.done < self.total:
            parts.append(f"ETA {format_seconds(eta)}")
        return " · ".join(parts)

    def start(self) -> Progress:
        self._started = time.monotonic()
        if in_prefect_run() and self._artifact_id is None:
            self._artifact_id = create_progress_artifact(
                progress=self.percent, key=self.key, description=self.describe()
            )
            self._last_sent = time.monotonic()
        return self

    def update(self, done: int, note: str | None = None) -> None:
        """Set the number of finished items (and the note shown after the count); sends an update when due."""
        self.done = max(0, min(done, self.total))
        if note is not None:
            self.note = note
        now = time.monotonic()
        if self._base is None:
            self._base = (now, self.done)
        if self._artifact_id is None:
            return
        if self.done >= self.total or now - self._last_sent >= self.min_interval:
            update_progress_artifact(self._artifact_id, progress=self.percent, description=self.describe())
            self._last_sent = now

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def __enter__(self) -> Progress:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None and self.done < self.total:
            self.update(self.total)
