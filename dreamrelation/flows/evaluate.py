"""Flow placeholder: the evaluate stage is being built (see the open issues)."""

from __future__ import annotations

from prefect import flow

from dreamrelation.config import PipelineConfig


@flow(name="evaluate")
def evaluate_flow(relation: str = "A058", config: PipelineConfig = PipelineConfig(), force: bool = False) -> None:
    raise NotImplementedError("the evaluate stage is not implemented yet")
