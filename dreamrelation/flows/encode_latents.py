"""Flow: VAE latents and T5 text features of one relation's captioned clips (GPU stage)."""

from __future__ import annotations

from prefect import flow

from dreamrelation.config import PipelineConfig
from dreamrelation.tasks.common import StageResult
from dreamrelation.tasks.latents import encode_latents_task
from dreamrelation.tasks.runs import stage_run, stage_run_name


@flow(name="encode-latents", log_prints=True, flow_run_name=stage_run_name("encode_latents"))
def encode_latents_flow(relation: str = "A058", config: PipelineConfig = PipelineConfig(), force: bool = False) -> StageResult:
    """Encode every captioned clip of `relation` with the Mochi VAE and T5 (METHOD.md §1)."""
    with stage_run(relation, "encode_latents"):
        return encode_latents_task(relation, config, force)
