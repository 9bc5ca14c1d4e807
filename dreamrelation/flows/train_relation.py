"""Flow: train the relation LoRA triplet of one relation (METHOD.md §2-§5)."""

from __future__ import annotations

from prefect import flow

from dreamrelation.config import PipelineConfig
from dreamrelation.tasks.common import StageResult
from dreamrelation.tasks.runs import stage_run, stage_run_name
from dreamrelation.tasks.training import train_relation_task


@flow(name="train-relation", log_prints=True, flow_run_name=stage_run_name("train_relation"))
def train_relation_flow(relation: str = "A058", config: PipelineConfig = PipelineConfig(), force: bool = False) -> StageResult:
    """Hybrid mask training + relational contrastive loss; writes checkpoints and the inference LoRA.

    Then the LoRAs of the evaluation's 'trained' methods (the direct-LoRA baseline, ablations),
    each in its own run folder; the relation's own run is what the flow returns.
    """
    with stage_run(relation, "train_relation"):
        result = train_relation_task(relation, config, force)
        for method in config.trained_methods:
            train_relation_task(relation, config, force, method=method)
        return result
