"""Tasks of the data-selection stages: synthetic dataset, select_clips, write_captions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fsspec
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from dreamrelation.config import GENERATED_DATASETS, PipelineConfig, relation_table
from dreamrelation.data.captions import MANIFEST_NAME, caption_manifest, load_clip_captions, write_sidecars
from dreamrelation.data.manifest import read_manifest
from dreamrelation.data.relations import get_relation
from dreamrelation.data.select import select_clips
from dreamrelation.data.store import ArtifactStore
from dreamrelation.data.synthetic import generate_dataset
from dreamrelation.plan import plan_relation
from dreamrelation.tasks.common import StageResult, run_stage
from dreamrelation.tasks.ui import artifact_key

#: Dropped clips named one by one in the run log (all of them are in the clips table).
MAX_DROPPED_LINES = 200


@task(name="generate-synthetic-dataset", cache_policy=NO_CACHE)
def generate_synthetic_task(config: PipelineConfig) -> str:
    """Write the demo's synthetic NTU-format dataset at select.dataset_root (skips if complete)."""
    if config.synthetic is None:
        return config.select.dataset_root
    root = config.select.dataset_root
    create = Path(root).resolve() in {Path(default).resolve() for default in GENERATED_DATASETS}
    clips = generate_dataset(root, config.synthetic, create=create)
    get_run_logger().info("synthetic NTU-format dataset: %d clips at %s", len(clips), config.select.dataset_root)
    return config.select.dataset_root


@task(name="select-clips", cache_policy=NO_CACHE)
def select_clips_task(relation: str, config: PipelineConfig, force: bool = False) -> StageResult:
    store = ArtifactStore(config.root)
    artifact = plan_relation(relation, config)["select_clips"]
    table = relation_table(config)

    def build(tmp: str, summary: dict[str, Any]) -> None:
        # the store caches the dataset listing and per-clip checks; force lists the dataset again
        manifest = select_clips(get_relation(relation, table), config.select, config.video, store=store, refresh=force)
        manifest.fingerprint = artifact.fingerprint
        with fsspec.open(tmp, "w") as handle:
            handle.write(manifest.model_dump_json(indent=2))
        summary.update(
            selected=len(manifest.clips), available=manifest.available, dropped=len(manifest.dropped),
            unchecked=manifest.unchecked,
        )
        log_dropped(relation, manifest.dropped)

    result = run_stage(store, artifact, build, force)
    manifest = read_manifest(result.uri)
    rows = [{"clip": c.clip_id, "status": "selected", "reason": ""} for c in manifest.clips]
    rows += [{"clip": d.clip_id, "status": "dropped", "reason": d.reason} for d in manifest.dropped]
    create_table_artifact(
        key=artifact_key(relation, "clips"),
        table=rows,
        description=f"Clips of {relation} ({manifest.relation_name}): {len(manifest.clips)} selected",
    )
    return result


def log_dropped(relation: str, dropped: list[Any], limit: int = MAX_DROPPED_LINES) -> None:
    """One run-log line per clip left out of the selection, with its reason (the first `limit`)."""
    logger = get_run_logger()
    for record in dropped[:limit]:
        logger.info("select_clips [%s]: dropped %s: %s", relation, record.clip_id, record.reason)
    if len(dropped) > limit:
        logger.info("select_clips [%s]: ... and %d more dropped clips (see the clips table)", relation, len(dropped) - limit)


@task(name="write-captions", cache_policy=NO_CACHE)
def write_captions_task(relation: str, config: PipelineConfig, force: bool = False) -> StageResult:
    store = ArtifactStore(config.root)
    plan = plan_relation(relation, config)
    manifest_uri = store.require(plan["select_clips"].key)
    table = relation_table(config)

    def build(tmp: str, summary: dict[str, Any]) -> None:
        clip_captions = load_clip_captions(config.captions.captions_file) if config.captions.captions_file else None
        manifest = caption_manifest(
            read_manifest(manifest_uri), get_relation(relation, table), clip_captions, config.captions.subject_words
        )
        write_sidecars(manifest, f"{tmp}/{relation}", config.captions.link_mode)
        with fsspec.open(f"{tmp}/{MANIFEST_NAME}", "w") as handle:
            handle.write(manifest.model_dump_json(indent=2))
        summary.update(captions=len(manifest.clips), distinct=len({c.caption for c in manifest.clips}))

    return run_stage(store, plan["write_captions"], build, force)
