"""Flow: train the relation LoRA triplet of one relation (METHOD.md §2-§5)."""

from __future__ import annotations

from prefect import flow

from dreamrelation.config import PipelineConfig
from dreamrelation.tasks.common import StageResult
from dreamrelation.tasks.training import train_relation_task


@flow(name="train-relation", log_prints=True)
def train_relation_flow(relation: str = "A058", config: PipelineConfig = PipelineConfig(), force: bool = False) -> StageResult:
    """Hybrid mask training + relational contrastive loss; writes checkpoints and the inference LoRA."""
    return train_relation_task(relation, config, force)
