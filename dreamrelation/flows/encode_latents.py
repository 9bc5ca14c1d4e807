"""Flow: VAE latents and T5 text features of one relation's captioned clips (GPU stage)."""

from __future__ import annotations

from prefect import flow

from dreamrelation.config import PipelineConfig
from dreamrelation.tasks.common import StageResult
from dreamrelation.tasks.latents import encode_latents_task


@flow(name="encode-latents", log_prints=True)
def encode_latents_flow(relation: str = "A058", config: PipelineConfig = PipelineConfig(), force: bool = False) -> StageResult:
    """Encode every captioned clip of `relation` with the Mochi VAE and T5 (METHOD.md §1)."""
    return encode_latents_task(relation, config, force)
