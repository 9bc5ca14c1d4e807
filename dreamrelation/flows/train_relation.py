"""Flow: train the relation LoRA triplet of one relation (METHOD.md §2-§5)."""

from __future__ import annotations

from prefect import flow

from dreamrelation.config import PipelineConfig
from dreamrelation.tasks.common import StageResult
from dreamrelation.tasks.runs import stage_run, stage_run_name
from dreamrelation.tasks.training import train_relation_task


@flow(name="train-relation", log_prints=True, flow_run_name=stage_run_name("train_relation"))
def train_relation_flow(relation: str = "A058", config: PipelineConfig = PipelineConfig(), force: bool = False) -> StageResult:
    """Hybrid mask training + relational contrastive loss; writes checkpoints and the inference LoRA."""
    with stage_run(relation, "train_relation"):
        return train_relation_task(relation, config, force)
