"""Flows of the relational toy world: the toy base model, and the study on top of it (issue 13)."""

from __future__ import annotations

from prefect import flow, get_run_logger

from dreamrelation.config import ToyConfig
from dreamrelation.plan import TOY
from dreamrelation.tasks.common import StageResult
from dreamrelation.tasks.runs import stage_run, toy_stage_run_name
from dreamrelation.tasks.summary import stage_table
from dreamrelation.tasks.toy import pretrain_base_task, study_task, study_v2_task


@flow(name="pretrain-toy-base", log_prints=True, flow_run_name=toy_stage_run_name("pretrain_base"))
def pretrain_base_flow(config: ToyConfig = ToyConfig(), force: bool = False) -> StageResult:
    """Train the tiny Mochi base on the world (VAE, then DiT), save it in the diffusers layout, gate it."""
    with stage_run(TOY, "pretrain_base"):
        return pretrain_base_task(config, force)


@flow(name="toy-study", log_prints=True, flow_run_name=toy_stage_run_name("study"))
def study_flow(config: ToyConfig = ToyConfig(), force: bool = False) -> list[StageResult]:
    """The toy base (built or reused), then every method trained and judged on unseen subjects
    (world v2: the study, round two)."""
    run_study = study_v2_task if config.pretrain.world.version == 2 else study_task
    with stage_run(TOY, "study"):
        results = [pretrain_base_task(config), run_study(config, force)]
    get_run_logger().info("toy-world stages:\n%s", stage_table(results))
    return results
