"""What a person reads in the runs list and the run log: run names, tags, the method's log lines.

- `stage_run_name(stage)` is a flow's `flow_run_name`: the run of stage `train_relation` for A058
  is named `a058-train-relation-<first 8 hex of the stage's fingerprint>`, so reruns of the same
  artifact share a name and another config gets another one (random names like `brainy-magpie`
  say nothing); the pipeline, the fan-out (`fan-out-26-relations-<fp>`) and the toy world's
  pretraining (`toy-base-<fp>`) and study (`toy-study-<fp>`) are named the same way;
- `stage_run(relation, stage)` (a context manager around a flow's body) tags the flow run
  `relation:A058` and `stage:train_relation` (the runs list filters on tags) and routes the
  method's `dreamrelation.*` loggers into the run's log at INFO (`method_logs`): the training
  loss, resume points, clips left out and why. `PREFECT_LOGGING_EXTRA_LOGGERS=dreamrelation`
  alone attaches Prefect's API handler but leaves the loggers at WARNING.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.logging.handlers import APILogHandler

from dreamrelation.config import ALL, PipelineConfig, ToyConfig, relations_to_run
from dreamrelation.data.ntu import normalize_relation_id
from dreamrelation.data.store import fingerprint
from dreamrelation.plan import STAGES, plan_relation, plan_toy

METHOD_LOGGER = "dreamrelation"
SHORT_FP = 8
#: The tag every run of the pipeline and its stages carries, besides relation:/stage: tags.
PROJECT_TAG = "dreamrelation"


def relation_tag(relation: str) -> str:
    return f"relation:{normalize_relation_id(relation)}"


def stage_tag(stage: str) -> str:
    return f"stage:{stage}"


def _parameters() -> dict[str, Any]:
    context = FlowRunContext.get()
    return dict(context.parameters) if context and context.parameters else {}


def _config(value: Any) -> PipelineConfig:
    return value if isinstance(value, PipelineConfig) else PipelineConfig.model_validate(value or {})


def _toy_config(value: Any) -> ToyConfig:
    return value if isinstance(value, ToyConfig) else ToyConfig.model_validate(value or {})


def run_name(relation: str, stage: str, config: PipelineConfig | dict[str, Any] | None) -> str:
    """`a058-train-relation-1a2b3c4d`: relation, stage, short fingerprint of the stage's artifact."""
    relation = normalize_relation_id(relation)
    fp = plan_relation(relation, _config(config))[stage].fingerprint[:SHORT_FP]
    return f"{relation.lower()}-{stage.replace('_', '-')}-{fp}"


def pipeline_run_name(relation: str, config: PipelineConfig | dict[str, Any] | None, stop_after: str | None) -> str:
    """`a058-relation-pipeline-<fp>`, the fingerprint of the last stage the run goes to."""
    relation = normalize_relation_id(relation)
    last = stop_after if stop_after in STAGES else STAGES[-1]
    fp = plan_relation(relation, _config(config))[last].fingerprint[:SHORT_FP]
    return f"{relation.lower()}-relation-pipeline-{fp}"


def fan_out_run_name(relations: list[str], config: PipelineConfig | dict[str, Any] | None) -> str:
    """`fan-out-3-relations-<fp>`, the fingerprint of the relations and the config.

    `["all"]` counts the relations it stands for (`fan-out-26-relations-<fp>` for NTU).
    """
    config = _config(config)
    relations = relations_to_run(config, relations)
    fp = fingerprint("fan_out", config, sorted(relations), "1")[:SHORT_FP]
    return f"fan-out-{len(relations)}-relations-{fp}"


#: Run-name prefix of each toy-world stage.
TOY_RUN_NAMES = {"pretrain_base": "toy-base", "study": "toy-study"}


def toy_run_name(stage: str, config: ToyConfig | dict[str, Any] | None) -> str:
    """`toy-base-1a2b3c4d` / `toy-study-1a2b3c4d`: the toy stage, short fingerprint of its artifact."""
    return f"{TOY_RUN_NAMES[stage]}-{plan_toy(_toy_config(config))[stage].fingerprint[:SHORT_FP]}"


def _safe(make: Callable[[], str], fallback: Callable[[], str]) -> str:
    # A name is a label: a parameter that does not validate must fail the run with its own
    # error (raised by the flow body), not while the run is being named.
    try:
        return make()
    except Exception:  # noqa: BLE001 - any failure falls back to a plain name
        return fallback()


def stage_run_name(stage: str) -> Callable[[], str]:
    """`flow_run_name=` of a stage flow: `<relation>-<stage>-<short fp>` from the run's parameters."""

    def name() -> str:
        params = _parameters()
        relation = str(params.get("relation", "relation"))
        return _safe(
            lambda: run_name(relation, stage, params.get("config")),
            lambda: f"{relation.lower()}-{stage.replace('_', '-')}",
        )

    name.__name__ = f"{stage}_run_name"
    return name


def pipeline_name() -> str:
    """`flow_run_name=` of the relation pipeline."""
    params = _parameters()
    relation = str(params.get("relation", "relation"))
    return _safe(
        lambda: pipeline_run_name(relation, params.get("config"), params.get("stop_after")),
        lambda: f"{relation.lower()}-relation-pipeline",
    )


def fan_out_name() -> str:
    """`flow_run_name=` of the fan-out."""
    params = _parameters()
    relations = [str(r) for r in params.get("relations") or []]
    count = "all" if [r.lower() for r in relations] == [ALL] else str(len(relations))
    return _safe(lambda: fan_out_run_name(relations, params.get("config")), lambda: f"fan-out-{count}-relations")


def toy_stage_run_name(stage: str) -> Callable[[], str]:
    """`flow_run_name=` of a toy-world flow: `toy-base-<short fp>` / `toy-study-<short fp>`."""

    def name() -> str:
        return _safe(lambda: toy_run_name(stage, _parameters().get("config")), lambda: TOY_RUN_NAMES[stage])

    name.__name__ = f"{stage}_run_name"
    return name


def tag_flow_run(*tags: str) -> list[str]:
    """Add `tags` to the current flow run (kept: the tags it has); returns its tags. No-op outside a run."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return []
    current = list(context.flow_run.tags or [])
    wanted = current + [tag for tag in dict.fromkeys(tags) if tag not in current]
    if wanted != current:
        with get_client(sync_client=True) as client:
            client.update_flow_run(context.flow_run.id, tags=wanted)
        context.flow_run.tags = wanted
    return wanted


@contextlib.contextmanager
def method_logs(level: int = logging.INFO) -> Iterator[logging.Logger]:
    """The `dreamrelation` loggers log at `level` (or finer, if set so) into the run's log meanwhile.

    Prefect's API handler is attached to `dreamrelation` for the duration unless
    PREFECT_LOGGING_EXTRA_LOGGERS already did; on exit the level and handlers are restored.
    """
    logger = logging.getLogger(METHOD_LOGGER)
    previous = logger.level
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)
    added = None
    if FlowRunContext.get() is not None and not any(isinstance(h, APILogHandler) for h in logger.handlers):
        added = APILogHandler()
        logger.addHandler(added)
    try:
        yield logger
    finally:
        if added is not None:
            logger.removeHandler(added)
        logger.setLevel(previous)


@contextlib.contextmanager
def stage_run(relation: str, stage: str, *extra_tags: str) -> Iterator[None]:
    """The body of a relation flow: tag the run (relation, stage) and route the method's INFO logs."""
    tag_flow_run(PROJECT_TAG, relation_tag(relation), stage_tag(stage), *extra_tags)
    with method_logs():
        yield

