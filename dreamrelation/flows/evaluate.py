"""Flows: evaluate one relation's LoRA (METHOD.md §6), and the report across relations."""

from __future__ import annotations

from prefect import flow

from dreamrelation.config import DEMO_RELATIONS, PipelineConfig
from dreamrelation.tasks.common import StageResult
from dreamrelation.tasks.evaluation import evaluate_task, evaluation_report_task
from dreamrelation.tasks.runs import stage_run, stage_run_name


@flow(name="evaluate", log_prints=True, flow_run_name=stage_run_name("evaluate"))
def evaluate_flow(relation: str = "A058", config: PipelineConfig = PipelineConfig(), force: bool = False) -> StageResult:
    """Generate videos per method (resumable), score CLIP-T, temporal consistency, FVD and relation
    accuracy; writes results.json and report.md and publishes them as artifacts."""
    with stage_run(relation, "evaluate"):
        return evaluate_task(relation, config, force)


@flow(name="evaluation-report", log_prints=True)
def evaluation_report_flow(relations: list[str] = DEMO_RELATIONS, config: PipelineConfig = PipelineConfig()) -> str:
    """The Table 1 report averaged over the relations that have a complete evaluation; returns its URI."""
    return evaluation_report_task(relations, config)
