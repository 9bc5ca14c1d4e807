"""The per-relation pipeline: six stage flows in DAG order, and the demo over several relations."""

from __future__ import annotations

import time

from prefect import flow, get_run_logger

from dreamrelation.config import DEMO_RELATIONS, PipelineConfig, relation_table
from dreamrelation.data.ntu import normalize_relation_id
from dreamrelation.data.relations import get_relation
from dreamrelation.data.store import ArtifactStore
from dreamrelation.flows.encode_latents import encode_latents_flow
from dreamrelation.flows.evaluate import evaluate_flow, evaluation_report_flow
from dreamrelation.flows.make_masks import make_masks_flow
from dreamrelation.flows.select_clips import select_clips_flow
from dreamrelation.flows.train_relation import train_relation_flow
from dreamrelation.flows.write_captions import write_captions_flow
from dreamrelation.plan import STAGES
from dreamrelation.preflight import check_inputs
from dreamrelation.tasks.common import StageResult
from dreamrelation.tasks.runs import pipeline_name, stage_run
from dreamrelation.tasks.summary import StageRow, publish_pipeline_summary, stage_row, stage_table

STAGE_FLOWS = {
    "select_clips": select_clips_flow,
    "write_captions": write_captions_flow,
    "encode_latents": encode_latents_flow,
    "make_masks": make_masks_flow,
    "train_relation": train_relation_flow,
    "evaluate": evaluate_flow,
}
assert tuple(STAGE_FLOWS) == STAGES


@flow(name="relation-pipeline", log_prints=True, flow_run_name=pipeline_name)
def relation_pipeline(
    relation: str = "A058",
    config: PipelineConfig = PipelineConfig(),
    force: bool = False,
    stop_after: str | None = None,
) -> list[StageResult]:
    """Run every stage for one relation; finished stages are skipped (their artifacts are reused).

    `stop_after` ends the run after the named stage (e.g. `make_masks` on a CPU-only machine).
    The run ends with a summary artifact `<relation>-pipeline-summary`: every stage, built or
    reused, its duration, its subflow run and artifact, and the final metrics (also on failure),
    and logs the table the CLI prints (relation, stage, built / reused, artifact) for the stages
    that finished.
    """
    relation = normalize_relation_id(relation)
    info = get_relation(relation, relation_table(config))  # fail fast on an unknown id
    if stop_after is not None and stop_after not in STAGES:  # ... or stage, before the root is made
        raise ValueError(f"stop_after={stop_after!r} is not a stage; stages: {', '.join(STAGES)}")
    ArtifactStore(config.root).check_writable()  # ... on a root no stage could write
    check_inputs(relation, config, stop_after)  # ... and on an input a later stage would find bad, hours later
    results: list[StageResult] = []
    rows: list[StageRow] = []
    with stage_run(relation, "relation_pipeline", "pipeline"):
        try:
            for name, stage_flow in STAGE_FLOWS.items():
                started = time.monotonic()
                state = stage_flow(relation=relation, config=config, force=force, return_state=True)
                rows.append(stage_row(name, state, time.monotonic() - started, relation, config))
                results.append(state.result())  # a failed stage raises its error here
                if name == stop_after:
                    break
        finally:
            publish_pipeline_summary(relation, rows, stop_after, info.name)
            if results:
                get_run_logger().info("relation-pipeline %s:\n%s", relation, stage_table(results))
    return results


@flow(name="demo", log_prints=True)
def demo_flow(
    relations: list[str] = DEMO_RELATIONS,
    config: PipelineConfig = PipelineConfig(),
    force: bool = False,
) -> tuple[dict[str, list[StageResult]], str]:
    """The embedded default: synthetic NTU data + tiny models, the whole DAG for a few relations.

    Its log ends with the table of every relation's stages (as the CLI prints it) and the report.
    """
    table = relation_table(config)
    for relation in relations:  # every relation's inputs, before the first relation's stages run
        check_inputs(get_relation(relation, table).id, config)
    logger = get_run_logger()
    results = {}
    for relation in relations:
        results[relation] = relation_pipeline(relation=relation, config=config, force=force)
        logger.info("demo: relation %s finished", relation)
    report = evaluation_report_flow(relations=list(relations), config=config)
    logger.info("demo: every stage of %s:\n%s", ", ".join(results), stage_table(r for rs in results.values() for r in rs))
    logger.info("demo: evaluation report across relations at %s/report.md", report)
    return results, report
