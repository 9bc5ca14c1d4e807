"""Task of the train_relation stage: read the stores, train the relation LoRAs, keep the run."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from dreamrelation.config import PipelineConfig
from dreamrelation.data.store import ArtifactStore
from dreamrelation.model.train import train
from dreamrelation.plan import plan_relation
from dreamrelation.stages.training import load_training_clips
from dreamrelation.tasks.common import StageResult, run_stage
from dreamrelation.tasks.ui import Progress, artifact_key


@task(name="train-relation", cache_policy=NO_CACHE)
def train_relation_task(relation: str, config: PipelineConfig, force: bool = False) -> StageResult:
    """Train on the relation's latents + masks; a rerun resumes from the run's last checkpoint."""
    store = ArtifactStore(config.root)
    plan = plan_relation(relation, config)
    latents_uri = store.require(plan["encode_latents"].key)
    masks_uri = store.require(plan["make_masks"].key)
    artifact = plan["train_relation"]

    def build(run_dir: str, summary: dict[str, Any]) -> None:
        data = load_training_clips(latents_uri, masks_uri, config.train.min_clips)
        with Progress(artifact_key(relation, "train-steps"), config.train.steps, "training steps") as bar:
            result = train(
                data.clips,
                data.empty_text,
                data.vae_norm,
                config.train,
                run_dir,
                config.model,
                on_step=lambda record: bar.update(record["step"]),
                # remote roots: upload each checkpoint, so a killed worker's rerun anywhere resumes
                on_checkpoint=lambda _: store.sync_up(run_dir, artifact.key),
            )
        create_table_artifact(
            key=artifact_key(relation, "lora-parameters"),
            table=result.parameter_table,
            description=f"Trainable parameters per adapter ({relation})",
        )
        summary.update(
            clips=len(data.clips),
            steps=result.final_step,
            resumed_from=result.resumed_from,
            loss_rec=result.loss_rec,
            loss_rcl=result.loss_rcl,
            lora=str(result.lora_path.name) if result.lora_path else None,
            left_out=data.left_out,
        )

    return run_stage(store, artifact, build, force, resumable=True)
