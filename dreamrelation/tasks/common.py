"""Shared orchestration policy of every stage task: skip-if-complete, atomic write, event.

The artifact store is the cache (DESIGN.md): a stage whose artifact has a completion marker
is skipped and says so in the log; otherwise it is built under a temporary name and committed.
Prefect's own result cache is off for these tasks (NO_CACHE) so the store is the one truth.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from prefect import get_run_logger
from prefect.context import FlowRunContext
from prefect.events import emit_event
from pydantic import BaseModel

from dreamrelation.data.store import ArtifactStore, DiskFullError, disk_full_error
from dreamrelation.plan import StageArtifact
from dreamrelation.tasks.ui import publish_store_link


@dataclass(frozen=True)
class StageResult:
    """What a stage task hands back: where its artifact is, and whether it was rebuilt."""

    stage: str
    relation: str
    uri: str
    fingerprint: str
    skipped: bool
    summary: dict[str, Any]


def event_name(stage: str) -> str:
    return f"dreamrelation.{stage}.completed"


def relation_resource(relation: str) -> str:
    return f"dreamrelation.relation.{relation}"


def flow_config_json() -> Any:
    """The running stage flow's `config` parameter as JSON (every stage flow has one), or None.

    It travels in the completion event so that a deployment triggered by the event
    (prefect.yaml: `config: "{{ event.payload.config }}"`) recomputes the same artifact keys.
    """
    context = FlowRunContext.get()
    config = context.parameters.get("config") if context else None
    return config.model_dump(mode="json") if isinstance(config, BaseModel) else config


def run_label() -> str:
    """This flow run's name (what the UI shows), or the process id outside a flow run."""
    context = FlowRunContext.get()
    return context.flow_run.name if context and context.flow_run else f"pid {os.getpid()}"


def _reuse(store: ArtifactStore, artifact: StageArtifact) -> StageResult:
    uri = store.uri(artifact.key)
    summary = store.marker(artifact.key).get("summary", {})
    get_run_logger().info(
        "%s [%s]: already complete at %s, skipping (force=true rebuilds)", artifact.stage, artifact.relation, uri
    )
    return StageResult(artifact.stage, artifact.relation, uri, artifact.fingerprint, True, summary)


def _build(
    store: ArtifactStore,
    artifact: StageArtifact,
    build: Callable[[str, dict[str, Any]], None],
    force: bool,
    resumable: bool,
) -> StageResult:
    """Build the artifact; the caller holds its lock, so leftovers of interrupted writes are stale."""
    logger = get_run_logger()
    uri = store.uri(artifact.key)
    summary: dict[str, Any] = {}
    meta = {"stage": artifact.stage, "relation": artifact.relation, "fingerprint": artifact.fingerprint, "summary": summary}
    logger.info("%s [%s]: building %s", artifact.stage, artifact.relation, uri)
    store.remove_partials(artifact.key)
    if force and resumable:
        store.remove(artifact.key)
    writer = store.write_in_place if resumable else store.write
    try:
        with writer(artifact.key, meta) as location:
            build(str(location), summary)
    except Exception as exc:
        disk_error = disk_full_error(exc)
        if disk_error is None:
            raise
        raise DiskFullError(
            disk_error.errno,
            f"{artifact.stage} [{artifact.relation}] could not write {disk_error.filename or uri}: "
            f"{disk_error.strerror}; free space there and run again (finished stages are reused)",
        ) from exc
    logger.info("%s [%s]: wrote %s", artifact.stage, artifact.relation, uri)
    return StageResult(artifact.stage, artifact.relation, uri, artifact.fingerprint, False, summary)


def run_stage(
    store: ArtifactStore,
    artifact: StageArtifact,
    build: Callable[[str, dict[str, Any]], None],
    force: bool = False,
    resumable: bool = False,
) -> StageResult:
    """Build `artifact` with `build(location, summary)` unless it is already complete.

    `build` writes into the location and may fill `summary` (counts, reasons); the summary
    is stored in the completion marker and sent with the completion event. The location is a
    fresh temporary, or for `resumable` stages (training, evaluation) a folder that keeps
    what an interrupted run left there, so a rerun resumes from it.

    One run at a time builds an artifact: a second is refused with `ArtifactLockedError` naming
    the first. A full disk ends the stage with one `DiskFullError` naming the stage and the path.
    """
    uri = store.uri(artifact.key)
    if store.is_complete(artifact.key) and not force:
        result = _reuse(store, artifact)
    else:
        store.check_writable()
        with store.lock(artifact.key, holder=run_label()):
            if store.is_complete(artifact.key) and not force:  # another run finished it meanwhile
                result = _reuse(store, artifact)
            else:
                result = _build(store, artifact, build, force, resumable)
    emit_event(
        event=event_name(artifact.stage),
        resource={"prefect.resource.id": relation_resource(artifact.relation), "dreamrelation.stage": artifact.stage},
        payload={
            "relation": artifact.relation,
            "uri": uri,
            "fingerprint": artifact.fingerprint,
            "skipped": result.skipped,
            "config": flow_config_json(),
        },
    )
    publish_store_link(artifact.stage, artifact.relation, uri, skipped=result.skipped)
    return result
