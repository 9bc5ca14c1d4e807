"""Flow: caption every selected clip and write the `.txt` sidecar folder."""

from __future__ import annotations

from prefect import flow

from dreamrelation.config import PipelineConfig
from dreamrelation.tasks.common import StageResult
from dreamrelation.tasks.selection import write_captions_task


@flow(name="write-captions", log_prints=True)
def write_captions_flow(relation: str = "A058", config: PipelineConfig = PipelineConfig(), force: bool = False) -> StageResult:
    """Caption the manifest of `relation` from the relation table or a per-clip caption file."""
    return write_captions_task(relation, config, force)
