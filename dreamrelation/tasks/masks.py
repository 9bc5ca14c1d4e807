"""Task of the make_masks stage: subject masks, latent masks and previews of a manifest."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from dreamrelation.config import PipelineConfig
from dreamrelation.data.manifest import read_manifest
from dreamrelation.data.masks import read_mask_status
from dreamrelation.data.store import ArtifactStore
from dreamrelation.plan import plan_relation
from dreamrelation.stages.masks import make_masks
from dreamrelation.tasks.common import StageResult, run_stage
from dreamrelation.tasks.ui import Progress, artifact_key, store_link


@task(name="make-masks", cache_policy=NO_CACHE)
def make_masks_task(relation: str, config: PipelineConfig, force: bool = False) -> StageResult:
    """Masks of the selected clips of `relation` (skips if the artifact is complete)."""
    store = ArtifactStore(config.root)
    plan = plan_relation(relation, config)
    manifest = read_manifest(store.require(plan["select_clips"].key))
    artifact = plan["make_masks"]

    def build(location: str, summary: dict[str, Any]) -> None:
        with Progress(artifact_key(relation, "make-masks"), len(manifest.clips), "clips masked") as bar:
            summary.update(make_masks(manifest, location, config.video, config.masks, artifact.fingerprint, bar.update))

    result = run_stage(store, artifact, build, force)
    create_markdown_artifact(
        key=artifact_key("masks", relation), markdown=_report(result.uri), description=f"make_masks {relation}"
    )
    return result


def _report(uri: str) -> str:
    """Markdown table of every clip's mask status, with a link to its preview image."""
    status = read_mask_status(uri)
    rows = ["| clip | status | subjects | preview / reason |", "|---|---|---|---|"]
    for record in status["clips"]:
        if record["status"] == "ok":
            link = store_link(f"{uri}/{record['preview']}")
            detail = f"[preview]({link})"
            subjects = ", ".join(str(i) for i in record["subject_ids"])
        else:
            detail, subjects = record["reason"].replace("|", "/"), ""
        rows.append(f"| {record['clip_id']} | {record['status']} | {subjects} | {detail} |")
    summary = status["summary"]
    head = (
        f"**{status['backend']}** masks: {summary['ok']} ok, "
        f"{summary['skipped']} skipped, {summary['failed']} failed\n\n"
    )
    return head + "\n".join(rows)
