"""Flow: caption every selected clip and write the `.txt` sidecar folder."""

from __future__ import annotations

from prefect import flow

from dreamrelation.config import PipelineConfig
from dreamrelation.tasks.common import StageResult
from dreamrelation.tasks.runs import stage_run, stage_run_name
from dreamrelation.tasks.selection import write_captions_task


@flow(name="write-captions", log_prints=True, flow_run_name=stage_run_name("write_captions"))
def write_captions_flow(relation: str = "A058", config: PipelineConfig = PipelineConfig(), force: bool = False) -> StageResult:
    """Caption the manifest of `relation` from the relation table or a per-clip caption file."""
    with stage_run(relation, "write_captions"):
        return write_captions_task(relation, config, force)
