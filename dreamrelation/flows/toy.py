"""Flows of the relational toy world: the toy base model, and the study on top of it (issue 13)."""

from __future__ import annotations

from prefect import flow

from dreamrelation.config import ToyConfig
from dreamrelation.plan import TOY
from dreamrelation.tasks.common import StageResult
from dreamrelation.tasks.runs import stage_run
from dreamrelation.tasks.toy import pretrain_base_task, study_task


@flow(name="pretrain-toy-base", log_prints=True)
def pretrain_base_flow(config: ToyConfig = ToyConfig(), force: bool = False) -> StageResult:
    """Train the tiny Mochi base on the world (VAE, then DiT), save it in the diffusers layout, gate it."""
    with stage_run(TOY, "pretrain_base"):
        return pretrain_base_task(config, force)


@flow(name="toy-study", log_prints=True)
def study_flow(config: ToyConfig = ToyConfig(), force: bool = False) -> list[StageResult]:
    """The toy base (built or reused), then every method trained and judged on unseen subjects."""
    with stage_run(TOY, "study"):
        base = pretrain_base_task(config)
        return [base, study_task(config, force)]
