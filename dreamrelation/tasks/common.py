"""Shared orchestration policy of every stage task: skip-if-complete, atomic write, event.

The artifact store is the cache (DESIGN.md): a stage whose artifact has a completion marker
is skipped and says so in the log; otherwise it is built under a temporary name and committed.
Prefect's own result cache is off for these tasks (NO_CACHE) so the store is the one truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from prefect import get_run_logger
from prefect.events import emit_event

from dreamrelation.data.store import ArtifactStore
from dreamrelation.plan import StageArtifact


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


def run_stage(
    store: ArtifactStore,
    artifact: StageArtifact,
    build: Callable[[str, dict[str, Any]], None],
    force: bool = False,
) -> StageResult:
    """Build `artifact` with `build(tmp_location, summary)` unless it is already complete.

    `build` writes into the temporary location and may fill `summary` (counts, reasons);
    the summary is stored in the completion marker and sent with the completion event.
    """
    logger = get_run_logger()
    uri = store.uri(artifact.key)
    if store.is_complete(artifact.key) and not force:
        summary = store.marker(artifact.key).get("summary", {})
        logger.info("%s [%s]: already complete at %s, skipping (force=true rebuilds)", artifact.stage, artifact.relation, uri)
        result = StageResult(artifact.stage, artifact.relation, uri, artifact.fingerprint, True, summary)
    else:
        summary: dict[str, Any] = {}
        meta = {"stage": artifact.stage, "relation": artifact.relation, "fingerprint": artifact.fingerprint, "summary": summary}
        logger.info("%s [%s]: building %s", artifact.stage, artifact.relation, uri)
        with store.write(artifact.key, meta) as tmp:
            build(tmp, summary)
        logger.info("%s [%s]: wrote %s", artifact.stage, artifact.relation, uri)
        result = StageResult(artifact.stage, artifact.relation, uri, artifact.fingerprint, False, summary)
    emit_event(
        event=event_name(artifact.stage),
        resource={"prefect.resource.id": relation_resource(artifact.relation), "dreamrelation.stage": artifact.stage},
        payload={
            "relation": artifact.relation,
            "uri": uri,
            "fingerprint": artifact.fingerprint,
            "skipped": result.skipped,
        },
    )
    return result
