"""Flow: choose the training clips of one relation (and write the demo dataset first)."""

from __future__ import annotations

from prefect import flow

from dreamrelation.config import PipelineConfig
from dreamrelation.data.store import ArtifactStore
from dreamrelation.tasks.common import StageResult
from dreamrelation.tasks.runs import stage_run, stage_run_name
from dreamrelation.tasks.selection import generate_synthetic_task, select_clips_task


@flow(name="select-clips", log_prints=True, flow_run_name=stage_run_name("select_clips"))
def select_clips_flow(relation: str = "A058", config: PipelineConfig = PipelineConfig(), force: bool = False) -> StageResult:
    """Scan the NTU RGB+D root, filter, and write the clip manifest of `relation`."""
    with stage_run(relation, "select_clips"):
        ArtifactStore(config.root).check_writable()  # before the synthetic dataset is written
        generate_synthetic_task(config)
        return select_clips_task(relation, config, force)
