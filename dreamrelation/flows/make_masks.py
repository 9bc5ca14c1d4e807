"""Flow: subject masks and latent masks of one relation's selected clips."""

from __future__ import annotations

from prefect import flow

from dreamrelation.config import PipelineConfig
from dreamrelation.tasks.common import StageResult
from dreamrelation.tasks.masks import make_masks_task


@flow(name="make-masks", log_prints=True)
def make_masks_flow(relation: str = "A058", config: PipelineConfig = PipelineConfig(), force: bool = False) -> StageResult:
    """Segment the two subjects of every selected clip of `relation` (METHOD.md §3)."""
    return make_masks_task(relation, config, force)
