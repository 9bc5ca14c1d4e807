"""Serve the deployments of prefect.yaml from one machine, without a work pool or worker.

`dreamrelation serve` (or `python -m dreamrelation.flows.serve`) registers the
relation-pipeline deployment and one deployment per stage with the Prefect API, with the
same names and the same per-relation event triggers as prefect.yaml, and runs their flow runs
in subprocesses of this process. `limit` (default 1) caps how many run at once: one GPU, one
stage at a time. The fan-out flow is not served here (its run would hold the only slot while
it waits); run `dreamrelation fan-out` from another shell instead.
"""

from __future__ import annotations

import importlib
import os
from datetime import timedelta

from prefect import Flow, serve
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

# Method code logs to `dreamrelation.*`; served runs inherit this process's environment.
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "dreamrelation")

# deployment name -> flow, in DAG order (the names prefect.yaml uses and the triggers match)
DEPLOYMENTS: dict[str, str] = {
    "relation-pipeline": "dreamrelation.flows.pipeline:relation_pipeline",
    "select-clips": "dreamrelation.flows.select_clips:select_clips_flow",
    "write-captions": "dreamrelation.flows.write_captions:write_captions_flow",
    "encode-latents": "dreamrelation.flows.encode_latents:encode_latents_flow",
    "make-masks": "dreamrelation.flows.make_masks:make_masks_flow",
    "train-relation": "dreamrelation.flows.train_relation:train_relation_flow",
    "evaluate": "dreamrelation.flows.evaluate:evaluate_flow",
}

RELATION_EVENTS = {"prefect.resource.id": "dreamrelation.relation.*"}
# the triggered run gets the relation and config of the event (a lone template keeps its JSON type)
FROM_EVENT = {"relation": "{{ event.payload.relation }}", "config": "{{ event.payload.config }}"}
JOIN_WINDOW = timedelta(days=1)


def trigger_description(target: str, upstream: list[str], expect: str, after: str | None = None) -> str:
    """What an automation does, in words (the Automations page shows it under the name)."""
    source = " or ".join(upstream)
    if after is None:
        return (
            f"When a {source} deployment run finishes {expect} for a relation (event dreamrelation.{expect}.completed), "
            f"start {target} for that same relation with the event's relation and config."
        )
    return (
        f"When {expect} finishes for a relation whose {after} finished earlier (events dreamrelation.{after}.completed, "
        f"then dreamrelation.{expect}.completed, same relation, within a day, from {source} deployment runs), "
        f"start {target} for that relation with the event's relation and config."
    )


def chain_trigger(
    name: str, upstream: list[str], expect: str, after: str | None = None, within: timedelta | None = None
) -> DeploymentEventTrigger:
    """Run the deployment for the relation of a `dreamrelation.<expect>.completed` event.

    Only events from runs of the `upstream` deployments count (so the relation-pipeline
    deployment, which runs every stage itself, chains nothing); for_each keeps relations apart.
    With `after`, that stage's event must have come first for the same relation (a join).
    """
    related_names: str | list[str] = [f"{d}*" for d in upstream] if len(upstream) > 1 else f"{upstream[0]}*"
    spec: dict = {
        "name": name,
        "description": trigger_description(name.split("-after-")[0], upstream, expect, after),
        "match": RELATION_EVENTS,
        "match_related": {"prefect.resource.role": "deployment", "prefect.resource.name": related_names},
        "expect": {f"dreamrelation.{expect}.completed"},
        "for_each": {"prefect.resource.id"},
        "parameters": FROM_EVENT,
    }
    if after is not None:
        spec["after"] = {f"dreamrelation.{after}.completed"}
    if within is not None:
        spec["within"] = within
    return DeploymentEventTrigger.model_validate(spec)


def stage_triggers() -> dict[str, list[DeploymentEventTrigger]]:
    """The triggers of each stage deployment (the same as prefect.yaml's)."""
    join = ["encode-latents", "make-masks"]
    return {
        "write-captions": [chain_trigger("write-captions-after-select-clips", ["select-clips"], "select_clips")],
        "encode-latents": [chain_trigger("encode-latents-after-write-captions", ["write-captions"], "write_captions")],
        "make-masks": [chain_trigger("make-masks-after-write-captions", ["write-captions"], "write_captions")],
        # latents AND masks of one relation; see prefect.yaml for why not a compound trigger
        "train-relation": [
            chain_trigger("train-relation-after-latents-then-masks", join, "make_masks", "encode_latents", JOIN_WINDOW),
            chain_trigger("train-relation-after-masks-then-latents", join, "encode_latents", "make_masks", JOIN_WINDOW),
        ],
        "evaluate": [chain_trigger("evaluate-after-train-relation", ["train-relation"], "train_relation")],
    }


def load_flow(target: str) -> Flow:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def build_deployments(names: list[str] | None = None) -> list[RunnerDeployment]:
    """RunnerDeployments for `names` (default: all of DEPLOYMENTS), with their triggers."""
    triggers = stage_triggers()
    deployments = []
    for name in names or list(DEPLOYMENTS):
        if name not in DEPLOYMENTS:
            raise ValueError(f"unknown deployment {name!r}; deployments: {', '.join(DEPLOYMENTS)}")
        deployments.append(
            load_flow(DEPLOYMENTS[name]).to_deployment(
                name=name,
                triggers=triggers.get(name, []),
                tags=["dreamrelation"] + (["stage"] if name != "relation-pipeline" else []),
                entrypoint_type=EntrypointType.MODULE_PATH,
            )
        )
    return deployments


def serve_all(limit: int | None = 1, names: list[str] | None = None) -> None:
    """Register the deployments and run their flow runs here until interrupted (Ctrl-C)."""
    serve(*build_deployments(names), limit=limit)


if __name__ == "__main__":
    serve_all()
