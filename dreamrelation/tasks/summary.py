"""One summary on the parent run: what each stage of a pipeline did, what each relation of a fan-out did.

The stage subflows publish their own artifacts; a person who opens the `relation-pipeline` run
(or the `fan-out` run) sees on that run a table of every stage (built, reused, failed or not
run, its duration, a link to its subflow run and its artifact URI) and the final metrics.
`stage_table` is the plain-text table of where every artifact went: the CLI prints it at the
end, and the pipeline and demo flows log it into their run's log.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from prefect.artifacts import create_markdown_artifact
from prefect.states import State
from prefect.utilities.urls import url_for

from dreamrelation.config import PipelineConfig
from dreamrelation.data.previews import format_seconds, format_sig
from dreamrelation.data.store import ArtifactStore
from dreamrelation.evaluation.report import METRIC_LABELS, reported_metrics
from dreamrelation.plan import STAGES, plan_relation
from dreamrelation.tasks.common import StageResult
from dreamrelation.tasks.runs import run_name
from dreamrelation.tasks.ui import artifact_key, cell, in_prefect_run

#: Better-is direction of each metric, shown in the column header.
ARROWS = {"relation_accuracy": "↑", "subject_fidelity": "↑", "appearance_leakage": "↓", "joint": "↑", "clip_t": "↑",
          "temporal_consistency": "↑", "fvd": "↓"}


@dataclass
class StageRow:
    """One stage of a pipeline run, as the summary shows it."""

    stage: str
    result: str  # built | reused | failed | not run
    seconds: float | None = None
    flow_run_id: UUID | None = None
    flow_run_name: str = ""
    uri: str = ""
    note: str = ""
    summary: dict[str, Any] = field(default_factory=dict)


def stage_table(results: Iterable[StageResult]) -> str:
    """Where every artifact went, one line per stage result: relation, stage, built / reused, URI.

    The CLI prints this table at the end of a command; the pipeline and demo flows log it.
    """
    lines = [f"{'relation':<9} {'stage':<15} {'status':<8} artifact"]
    for result in results:
        status = "reused" if result.skipped else "built"
        lines.append(f"{result.relation:<9} {result.stage:<15} {status:<8} {result.uri}")
    return "\n".join(lines)


def stage_row(stage: str, state: State, seconds: float, relation: str, config: PipelineConfig) -> StageRow:
    """The row of a stage subflow from its final state (called with `return_state=True`)."""
    run_id = state.state_details.flow_run_id
    name = run_name(relation, stage, config)
    if not state.is_completed():
        return StageRow(stage, "failed", seconds, run_id, name, note=f"{state.name}: {state.message or ''}".strip(": "))
    result = state.result()
    return StageRow(
        stage, "reused" if result.skipped else "built", seconds, run_id, name, result.uri, summary=dict(result.summary)
    )


def run_link(flow_run_id: UUID | str | None, name: str) -> str:
    """Markdown link to a flow run's page in the UI (its name alone when no UI URL is known)."""
    if not flow_run_id:
        return cell(name)
    url = url_for("flow-run", obj_id=str(flow_run_id))
    return f"[{cell(name)}]({url})" if url else f"{cell(name)} (`{str(flow_run_id)[:8]}`)"


def metrics_markdown(methods: Mapping[str, Mapping[str, Any]], stds: Mapping[str, Any] | None = None) -> str:
    """A markdown table, one row per method, metrics at 4 significant figures (`n/a` where not computed)."""
    shown = reported_metrics(list(methods.values()))  # + the toy judge's columns where present
    header = "| method | " + " | ".join(f"{METRIC_LABELS[m]} {ARROWS[m]}" for m in shown) + " |"
    lines = [header, "|---" * (len(shown) + 1) + "|"]
    for name, values in methods.items():
        cells = []
        for metric in shown:
            text = format_sig(values.get(metric))
            std = (stds or {}).get(name) if metric == "relation_accuracy" else None
            if std is not None and text != "n/a":
                text += f" ± {format_sig(std)}"
            cells.append(text)
        lines.append(f"| {cell(name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pipeline_summary_markdown(
    relation: str, rows: Iterable[StageRow], stop_after: str | None = None, relation_name: str = ""
) -> str:
    """The parent run's table: every stage, built / reused / failed / not run, and the final metrics."""
    rows = {row.stage: row for row in rows}
    counts = {kind: sum(r.result == kind for r in rows.values()) for kind in ("built", "reused", "failed")}
    title = f"{relation} ({relation_name})" if relation_name else relation
    lines = [
        f"### {title}: {counts['built']} built, {counts['reused']} reused, {counts['failed']} failed",
        "",
        "| stage | result | duration | flow run | artifact |",
        "|---|---|---|---|---|",
    ]
    stopped = False
    for stage in STAGES:
        row = rows.get(stage)
        if row is None:
            reason = f"stop_after={stop_after}" if stopped and stop_after else "an earlier stage failed"
            lines.append(f"| {stage} | not run | | | {reason} |")
            continue
        where = f"`{cell(row.uri)}`" if row.uri else cell(row.note)
        lines.append(
            f"| {stage} | **{row.result}** | {format_seconds(row.seconds)} | "
            f"{run_link(row.flow_run_id, row.flow_run_name)} | {where} |"
        )
        stopped = stopped or stage == stop_after
    evaluate = rows.get("evaluate")
    if evaluate is not None and evaluate.summary.get("methods"):
        lines += ["", "#### Metrics", "", metrics_markdown(evaluate.summary["methods"])]
    return "\n".join(lines) + "\n"


def publish_pipeline_summary(
    relation: str, rows: Iterable[StageRow], stop_after: str | None = None, relation_name: str = ""
) -> str:
    """The summary markdown artifact `<relation>-pipeline-summary` on the running (parent) flow run."""
    markdown = pipeline_summary_markdown(relation, rows, stop_after, relation_name)
    if in_prefect_run():
        create_markdown_artifact(
            key=artifact_key(relation, "pipeline", "summary"),
            markdown=markdown,
            description=f"relation-pipeline {relation}: every stage, built or reused, and the final metrics",
        )
    return markdown


@dataclass(frozen=True)
class RelationRow:
    """One relation of a fan-out, as the summary shows it."""

    relation: str
    state: str
    seconds: float | None
    flow_run_id: str
    flow_run_name: str
    message: str = ""


def relation_progress(relation: str, config: PipelineConfig) -> tuple[str, dict[str, Any]]:
    """(`4/6 to make_masks`, evaluate's headline metrics per method) read from the store."""
    store = ArtifactStore(config.root)
    plan = plan_relation(relation, config)
    done = [stage for stage in STAGES if store.is_complete(plan[stage].key)]
    text = f"{len(done)}/{len(STAGES)}" + (f" to {done[-1]}" if done and len(done) < len(STAGES) else "")
    methods: dict[str, Any] = {}
    if "evaluate" in done:
        methods = store.marker(plan["evaluate"].key).get("summary", {}).get("methods", {}) or {}
    return text, methods


def fan_out_summary_markdown(rows: Iterable[RelationRow], config: PipelineConfig) -> str:
    """Per relation: state, duration, link to its pipeline run, stages complete, its first method's metrics."""
    rows = list(rows)
    done = sum(r.state == "Completed" for r in rows)
    progress = []
    for row in rows:
        try:
            stages, methods = relation_progress(row.relation, config)
        except Exception as exc:  # noqa: BLE001 - an unreadable store must not hide the table
            stages, methods = f"unknown ({type(exc).__name__})", {}
        progress.append((stages, *next(iter(methods.items()), ("", {}))))
    shown = reported_metrics([values for _, _, values in progress])
    metric_heads = " | ".join(f"{METRIC_LABELS[m]} {ARROWS[m]}" for m in shown)
    lines = [
        f"### Fan-out: {done} of {len(rows)} relations completed",
        "",
        f"| relation | state | duration | pipeline run | stages complete | method | {metric_heads} | message |",
        "|---" * (6 + len(shown) + 1) + "|",
    ]
    for row, (stages, method, values) in zip(rows, progress):
        metrics = " | ".join(format_sig(values.get(m), missing="") for m in shown)
        lines.append(
            f"| {row.relation} | **{row.state}** | {format_seconds(row.seconds)} | "
            f"{run_link(row.flow_run_id, row.flow_run_name)} | {stages} | {cell(method)} | {metrics} | {cell(row.message)} |"
        )
    return "\n".join(lines) + "\n"


def publish_fan_out_summary(rows: Iterable[RelationRow], config: PipelineConfig) -> str:
    """The markdown artifact `fan-out-summary` on the running fan-out flow run."""
    rows = list(rows)
    markdown = fan_out_summary_markdown(rows, config)
    if in_prefect_run():
        create_markdown_artifact(
            key="fan-out-summary",
            markdown=markdown,
            description=f"Fan-out over {len(rows)} relations: state, pipeline run, stages complete, metrics",
        )
    return markdown
