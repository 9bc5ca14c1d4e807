"""Flow placeholder: the train_relation stage is being built (see the open issues)."""

from __future__ import annotations

from prefect import flow

from dreamrelation.config import PipelineConfig


@flow(name="train-relation")
def train_relation_flow(relation: str = "A058", config: PipelineConfig = PipelineConfig(), force: bool = False) -> None:
    raise NotImplementedError("the train_relation stage is not implemented yet")
