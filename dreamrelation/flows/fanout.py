"""Flow: fan one relation-pipeline deployment run out per relation, wait, report.

Each relation becomes its own deployment run (`run_deployment(..., timeout=0)`), so N GPU
workers polling the work pool process N relations in parallel; this flow only polls their
states and ends with a per-relation table (log, table artifact `fan-out-status`, and the
markdown summary `fan-out-summary` with run links, stages complete and metrics).

Every worker must read and write the same artifacts: with workers on several machines, set
`config.root` (and `select.dataset_root`) to an object-store URL such as
`s3://bucket/dreamrelation` (`pip install -e .[s3]`, credentials in the workers' environment);
a local folder only works when every worker shares it (one machine, or a network mount).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from uuid import UUID, uuid4

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.context import FlowRunContext
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from dreamrelation.config import ALL, PipelineConfig, relations_to_run
from dreamrelation.data.previews import format_seconds
from dreamrelation.plan import STAGES
from dreamrelation.tasks.runs import PROJECT_TAG, fan_out_name, tag_flow_run
from dreamrelation.tasks.summary import RelationRow, publish_fan_out_summary

PIPELINE_DEPLOYMENT = "relation-pipeline/relation-pipeline"
ALL_RELATIONS = [ALL]


class FanOutError(RuntimeError):
    """Some relations' pipeline runs did not complete; the message lists them."""


class DeploymentNotFoundError(ValueError):
    """The pipeline deployment the fan-out would start runs of does not exist on the API."""


def require_deployment(name: str) -> None:
    """Fail with one line, before any run starts, when deployment `name` is not on the Prefect API."""
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise DeploymentNotFoundError(
                f"deployment {name!r} is not on the Prefect API at {client.api_url}: create the deployments "
                "with `prefect deploy --all` (prefect.yaml) or `dreamrelation serve`, and start workers"
            ) from None


@dataclass(frozen=True)
class RelationRunStatus:
    """Where one relation's pipeline run ended."""

    relation: str
    flow_run: str
    state: str
    seconds: float | None
    message: str
    flow_run_id: str = ""


def _status(relation: str, run: FlowRun, timed_out: bool = False) -> RelationRunStatus:
    state = run.state
    message = (state.message or "") if state else ""
    if timed_out:
        message = f"still {state.name if state else 'unknown'} when the fan-out stopped waiting"
    seconds = round(run.total_run_time.total_seconds(), 1) if run.total_run_time else None
    return RelationRunStatus(relation, run.name, state.name if state else "Unknown", seconds, message[:200], str(run.id))


def _poll(run_ids: dict[str, UUID], poll_seconds: float, timeout_seconds: float | None) -> dict[str, RelationRunStatus]:
    """Wait until every run is final (or the timeout passes); return each relation's status."""
    logger = get_run_logger()
    pending = dict(run_ids)
    finished: dict[str, RelationRunStatus] = {}
    start = time.monotonic()
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(pending.values()))))
            by_id = {run.id: run for run in runs}
            for relation, run_id in list(pending.items()):
                run = by_id.get(run_id)
                if run is not None and run.state is not None and run.state.is_final():
                    finished[relation] = _status(relation, run)
                    logger.info("fan-out: %s %s", relation, run.state.name)
                    del pending[relation]
            timed_out = timeout_seconds is not None and time.monotonic() - start > timeout_seconds
            if not pending or timed_out:
                for relation, run_id in pending.items():
                    run = by_id.get(run_id)
                    finished[relation] = (
                        _status(relation, run, timed_out=True)
                        if run is not None
                        else RelationRunStatus(relation, str(run_id), "Unknown", None, "flow run not found", str(run_id))
                    )
                return finished
            time.sleep(poll_seconds)


def _report(statuses: list[RelationRunStatus], config: PipelineConfig) -> None:
    rows = [asdict(status) for status in statuses]
    done = sum(status.state == "Completed" for status in statuses)
    create_table_artifact(
        key="fan-out-status",
        table=rows,
        description=f"Relation pipelines: {done} of {len(statuses)} completed",
    )
    lines = [f"{'relation':<9} {'state':<10} {'duration':>8}  flow run / message"]
    for s in statuses:
        lines.append(f"{s.relation:<9} {s.state:<10} {format_seconds(s.seconds):>8}  {s.flow_run} {s.message}".rstrip())
    get_run_logger().info("fan-out: %d of %d relations completed\n%s", done, len(statuses), "\n".join(lines))
    publish_fan_out_summary(
        [RelationRow(s.relation, s.state, s.seconds, s.flow_run_id, s.flow_run, s.message) for s in statuses], config
    )


@flow(name="fan-out", log_prints=True, flow_run_name=fan_out_name)
def fan_out_flow(
    relations: list[str] = ALL_RELATIONS,
    config: PipelineConfig = PipelineConfig(),
    force: bool = False,
    stop_after: str | None = None,
    deployment: str = PIPELINE_DEPLOYMENT,
    poll_seconds: float = 15.0,
    timeout_hours: float | None = None,
) -> list[RelationRunStatus]:
    """Start one `deployment` run per relation, wait, report.

    `relations` ["all"] (default) means every relation of the config: the 26 NTU two-person actions,
    or every relation folder of a folder dataset (select.source=folder).

    Each relation's run gets this flow's `config`, `force` and `stop_after`; which worker (GPU)
    runs it is up to the work pool. Fails if any relation's run does not complete.
    """
    relations = relations_to_run(config, relations)  # fails fast on an unknown id, before starting anything
    if stop_after is not None and stop_after not in STAGES:
        raise ValueError(f"stop_after={stop_after!r} is not a stage; stages: {', '.join(STAGES)}")

    require_deployment(deployment)
    tag_flow_run(PROJECT_TAG, "fan-out")
    parent = FlowRunContext.get()
    parent_id = str(parent.flow_run.id) if parent and parent.flow_run else str(uuid4())
    parameters = {"config": config.model_dump(mode="json"), "force": force, "stop_after": stop_after}
    run_ids: dict[str, UUID] = {}
    for relation in relations:
        run = run_deployment(
            deployment,
            parameters={"relation": relation, **parameters},
            timeout=0,
            flow_run_name=f"{relation.lower()}-{parent_id[:8]}",
            idempotency_key=f"fan-out-{parent_id}-{relation}",
            tags=["fan-out"],
        )
        run_ids[relation] = run.id
    get_run_logger().info("fan-out: started %d runs of %s: %s", len(run_ids), deployment, ", ".join(run_ids))

    timeout = None if timeout_hours is None else timeout_hours * 3600
    finished = _poll(run_ids, poll_seconds, timeout)
    statuses = [finished[relation] for relation in relations]
    _report(statuses, config)
    failed = [s.relation for s in statuses if s.state != "Completed"]
    if failed:
        raise FanOutError(f"{len(failed)} of {len(statuses)} relations did not complete: {', '.join(failed)}")
    return statuses
