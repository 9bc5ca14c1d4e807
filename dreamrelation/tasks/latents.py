"""Task of the encode_latents stage: VAE posteriors and T5 features of a captioned manifest."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from dreamrelation.config import PipelineConfig
from dreamrelation.data.captions import MANIFEST_NAME
from dreamrelation.data.manifest import read_manifest
from dreamrelation.data.store import ArtifactStore
from dreamrelation.plan import plan_relation
from dreamrelation.stages.latents import encode_latents
from dreamrelation.tasks.common import StageResult, run_stage
from dreamrelation.tasks.ui import Progress, artifact_key


@task(name="encode-latents", cache_policy=NO_CACHE)
def encode_latents_task(relation: str, config: PipelineConfig, force: bool = False) -> StageResult:
    """Encode the captioned clips of `relation` (skips if the artifact is complete)."""
    store = ArtifactStore(config.root)
    plan = plan_relation(relation, config)
    captions_uri = store.require(plan["write_captions"].key)
    manifest = read_manifest(f"{captions_uri}/{MANIFEST_NAME}")
    artifact = plan["encode_latents"]

    def build(location: str, summary: dict[str, Any]) -> None:
        with Progress(artifact_key(relation, "encode-latents"), len(manifest.clips), "clips encoded") as bar:
            summary.update(
                encode_latents(
                    manifest, location, config.video, config.model, config.latents, artifact.fingerprint, bar.update
                )
            )

    result = run_stage(store, artifact, build, force)
    reasons = result.summary.get("reasons", {})
    create_table_artifact(
        key=artifact_key(relation, "latents"),
        table=[
            {"clip": c.clip_id, "status": "failed" if c.clip_id in reasons else "ok",
             "reason": reasons.get(c.clip_id, "")}
            for c in manifest.clips
        ],
        description=f"encode_latents {relation}: {result.summary.get('ok', 0)} encoded, {len(reasons)} failed",
    )
    return result
