"""Prefect UI artifacts that any stage task can publish: progress bars and links to stores.

Artifact keys must be lower-case letters, digits and dashes (`artifact_key` makes one from
any parts). Every helper is a no-op outside a Prefect flow or task run, so the pure stage code
and its unit tests never need a Prefect server.
"""

from __future__ import annotations

import re
import time
from pathlib import PurePosixPath
from types import TracebackType
from uuid import UUID

from prefect.artifacts import create_link_artifact, create_progress_artifact, update_progress_artifact
from prefect.context import FlowRunContext, TaskRunContext

_NOT_KEY = re.compile(r"[^a-z0-9]+")


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


def publish_store_link(
    stage: str, relation: str, uri: str, description: str = "", skipped: bool = False
) -> UUID | None:
    """A link artifact `<relation>-<stage>-store` pointing at a stage's artifact in the store."""
    if not in_prefect_run():
        return None
    status = "reused (already complete)" if skipped else "built"
    return create_link_artifact(
        key=artifact_key(relation, stage, "store"),
        link=store_link(uri),
        link_text=uri,
        description=description or f"{stage} artifact of {relation}: {status}",
    )


class Progress:
    """A progress artifact for a long loop (clips encoded, masks done, training steps).

    ```python
    with Progress(artifact_key("a058", "train-steps"), total=steps, description="training steps") as bar:
        for step in range(steps):
            ...
            bar.advance()
    ```
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
        self._artifact_id: UUID | None = None
        self._last_sent = 0.0

    @property
    def percent(self) -> float:
        return 100.0 if self.total == 0 else min(100.0, 100.0 * self.done / self.total)

    def _describe(self) -> str:
        return f"{self.description}: {self.done}/{self.total}".lstrip(": ")

    def start(self) -> Progress:
        if in_prefect_run() and self._artifact_id is None:
            self._artifact_id = create_progress_artifact(
                progress=self.percent, key=self.key, description=self._describe()
            )
            self._last_sent = time.monotonic()
        return self

    def update(self, done: int) -> None:
        """Set the number of finished items; sends an update when due."""
        self.done = max(0, min(done, self.total))
        if self._artifact_id is None:
            return
        now = time.monotonic()
        if self.done >= self.total or now - self._last_sent >= self.min_interval:
            update_progress_artifact(self._artifact_id, progress=self.percent, description=self._describe())
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
