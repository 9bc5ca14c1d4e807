"""Flow: subject masks and latent masks of one relation's selected clips."""

from __future__ import annotations

from prefect import flow

from dreamrelation.config import PipelineConfig
from dreamrelation.tasks.common import StageResult
from dreamrelation.tasks.masks import make_masks_task
from dreamrelation.tasks.runs import stage_run, stage_run_name


@flow(name="make-masks", log_prints=True, flow_run_name=stage_run_name("make_masks"))
def make_masks_flow(relation: str = "A058", config: PipelineConfig = PipelineConfig(), force: bool = False) -> StageResult:
    """Segment the two subjects of every selected clip of `relation` (METHOD.md §3)."""
    with stage_run(relation, "make_masks"):
        return make_masks_task(relation, config, force)
