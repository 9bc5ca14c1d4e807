"""Orchestration end to end: a real Prefect server on loopback, a real process worker,
deployments from prefect.yaml, per-relation triggers (issue 6).

The slow test starts `prefect server start` (SQLite, fresh PREFECT_HOME under tmp_path) and a
process worker on the `cpu` queue of the `gpu` pool, deploys with `prefect deploy --all`, then:
- runs the select-clips deployment for A058 and A055 (`prefect deployment run --params`), each
  on a tiny synthetic dataset of its own, and the relation-pipeline deployment for A112 with
  `stop_after=train_relation` (tiny models, 2 training steps, one sample);
- checks the store artifacts, the completion events (events API), and that the triggers
  started write-captions for the same relation with the same config, then encode-latents and
  make-masks (left Scheduled: no worker polls the `gpu` queue here), and nothing for A112,
  whose stages ran inside the pipeline run;
- sends latents/masks completion events by hand (A058 latents, A055 masks, A058 masks) and
  checks that the join trigger started train-relation for A058 only;
- checks what a person sees in the UI (issue 11), through the REST API: run names and tags carry
  the relation and stage, the pipeline run holds the summary table of its stages, the masks table
  and the training sample hold `data:image/jpeg` pictures that decode, the training progress
  shows the loss, the method's training-loss lines are in the train subflow's log, and every
  automation has a description.
The server and worker run in their own process groups and are stopped (worker first) in a
`finally`, whatever happens.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))


# --------------------------------------------------------------------------- fast checks
def test_prefect_yaml_matches_serve_definitions():
    """prefect.yaml and `dreamrelation serve` declare the same deployments and triggers."""
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    from dreamrelation.flows.serve import DEPLOYMENTS, stage_triggers

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    entries = {d["name"]: d for d in spec["deployments"]}
    for name, target in DEPLOYMENTS.items():
        path, attr = entries[name]["entrypoint"].split(":")
        assert f"{path.removesuffix('.py').replace('/', '.')}:{attr}" == target
        assert (REPO / path).parent.is_dir()

    def dump(trigger: DeploymentEventTrigger) -> dict[str, Any]:
        return trigger.model_dump(mode="json", exclude={"id"})

    in_yaml = {
        name: [dump(DeploymentEventTrigger.model_validate(t)) for t in entry.get("triggers", [])]
        for name, entry in entries.items()
        if entry.get("triggers")
    }
    assert in_yaml == {name: [dump(t) for t in triggers] for name, triggers in stage_triggers().items()}
    assert spec["pull"][0]["prefect.deployments.steps.set_working_directory"]
    for entry in entries.values():
        assert entry["work_pool"]["job_variables"]["env"]["PREFECT_LOGGING_EXTRA_LOGGERS"] == "dreamrelation"


def test_artifact_keys_are_valid():
    from dreamrelation.tasks.ui import Progress, artifact_key, store_link

    assert artifact_key("A058", "make_masks", "store") == "a058-make-masks-store"
    assert re.fullmatch(r"[a-z0-9-]+", artifact_key("Hug / Umarmung!", "s3://b/x"))
    with pytest.raises(ValueError):
        artifact_key("__")
    assert store_link("/data/a b") == "file:///data/a%20b" and store_link("s3://b/k") == "s3://b/k"
    with Progress("Train Steps", total=3) as bar:  # outside a run: counts, sends nothing
        bar.advance(2)
    assert bar.key == "train-steps" and bar.done == 3 and bar.percent == 100.0


# --------------------------------------------------------------------------- processes
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _default_sigint() -> None:
    # A worker whose SIGINT is ignored (as in a non-interactive shell) ignores SIGTERM too.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            args, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_default_sigint,
        )


def _descendants(pid: int) -> list[int]:
    """Live descendants of `pid` (Linux /proc), e.g. flow-run processes of a worker."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _stop(proc: subprocess.Popen | None, grace: float = 15.0) -> None:
    """SIGTERM the process group and wait; then SIGKILL what is left of the group and of the
    leader's descendants (the worker starts each flow run in a session of its own)."""
    if proc is None:
        return
    descendants = _descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in descendants:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(10)


def _prefect(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    done = subprocess.run([PREFECT, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _wait_for(what: str, check: Callable[[], Any], timeout: float, logs: list[Path]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    tails = "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}" for log in logs if log.exists())
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{tails}")


# --------------------------------------------------------------------------- REST helpers
class Api:
    def __init__(self, url: str):
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=30)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One API call; retries 503 (SQLite busy under load), like Prefect's own client."""
        for attempt in range(10):
            response = self.http.request(method, path, json=body)
            if response.status_code != 503:
                break
            time.sleep(0.5 * (attempt + 1))
        response.raise_for_status()
        return response.json()

    def deployment_id(self, name: str) -> str:
        return self.call("GET", f"/deployments/name/{name}")["id"]

    def runs(self, deployment: str) -> list[dict[str, Any]]:
        body = {"flow_runs": {"deployment_id": {"any_": [self.deployment_id(deployment)]}}, "limit": 100}
        return self.call("POST", "/flow_runs/filter", body)

    def run(self, run_id: str) -> dict[str, Any]:
        return self.call("GET", f"/flow_runs/{run_id}")

    def events(self, prefix: str) -> list[dict[str, Any]]:
        return self.call("POST", "/events/filter", {"filter": {"event": {"prefix": [prefix]}}, "limit": 50})["events"]

    def log_records(self, run_id: str) -> list[tuple[str, str]]:
        body = {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}
        return [(log["name"], log["message"]) for log in self.call("POST", "/logs/filter", body)]

    def artifact_keys(self) -> set[str]:
        return {a["key"] for a in self.call("POST", "/artifacts/filter", {"limit": 200}) if a.get("key")}

    def artifacts(self, run_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The newest artifact of each key on these flow runs (their tasks' artifacts included)."""
        body = {"artifacts": {"flow_run_id": {"any_": run_ids}}, "sort": "CREATED_DESC", "limit": 200}
        found: dict[str, dict[str, Any]] = {}
        for artifact in self.call("POST", "/artifacts/filter", body):
            found.setdefault(artifact.get("key") or artifact["id"], artifact)
        return found

    def children(self, run_id: str) -> list[dict[str, Any]]:
        body = {"flow_runs": {"parent_flow_run_id": {"any_": [run_id]}}, "limit": 50}
        return self.call("POST", "/flow_runs/filter", body)


def _state(run: dict[str, Any]) -> str:
    return (run.get("state") or {}).get("type", "")


def _final(runs: list[dict[str, Any]]) -> bool:
    return bool(runs) and all(_state(r) in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} for r in runs)


def _by_relation(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        grouped.setdefault(run["parameters"]["relation"], []).append(run)
    return grouped


def _send_events(api_url: str, events: list[tuple[str, str, str, dict[str, Any]]]) -> None:
    """Emit (stage, relation, deployment name, config) completion events as a stage run would."""
    from prefect.events import Event
    from prefect.events.clients import PrefectEventsClient

    async def send() -> None:
        async with PrefectEventsClient(api_url=api_url) as client:
            for stage, relation, deployment, config in events:
                await client.emit(Event(
                    event=f"dreamrelation.{stage}.completed",
                    resource={"prefect.resource.id": f"dreamrelation.relation.{relation}", "dreamrelation.stage": stage},
                    related=[{
                        "prefect.resource.id": f"prefect.deployment.{deployment}-test",
                        "prefect.resource.role": "deployment",
                        "prefect.resource.name": deployment,
                    }],
                    payload={"relation": relation, "uri": f"{stage}-{relation}", "fingerprint": "0", "skipped": False, "config": config},
                ))
                await asyncio.sleep(1.0)  # distinct, ordered occurrence times

    asyncio.run(send())


# --------------------------------------------------------------------------- the e2e test
def _config(tmp_path: Path, relation: str) -> dict[str, Any]:
    """A tiny synthetic dataset of its own per relation (2 clips); one artifact root for all.

    A055 asks for 3 clips and takes what there is, so the method code logs a warning
    (logger `dreamrelation.select`) that must reach the flow run's log on the server.
    """
    select = {"clips_per_relation": 3, "on_shortage": "take_all"} if relation == "A055" else {"clips_per_relation": 2}
    (tmp_path / f"ntu-{relation.lower()}").mkdir(exist_ok=True)  # the generator fills only an empty folder
    return {
        "root": str(tmp_path / "artifacts"),
        "synthetic": {"relations": [relation], "clips_per_relation": 2, "frames": 30, "width": 64, "height": 36},
        "select": {"dataset_root": str(tmp_path / f"ntu-{relation.lower()}"), **select},
    }


def _pipeline_config(tmp_path: Path) -> dict[str, Any]:
    """A112 through train_relation on the tiny demo models: 2 steps, a sample at step 2."""
    from dreamrelation.model.config import TrainConfig

    train = TrainConfig.demo().model_dump(mode="json")
    train.update(steps=2, warmup_steps=1, checkpoint_every=2, sample_every=2)
    return {
        **_config(tmp_path, "A112"),
        "model": {"profile": "demo", "device": "cpu", "dtype": "float32", "models_cache": str(tmp_path / "models")},
        "train": train,
    }


def _jpeg(uri: str) -> bytes:
    """The bytes of a `data:image/jpeg;base64,` URI, checked to be a JPEG (or PNG) file."""
    assert uri.startswith(("data:image/jpeg;base64,", "data:image/png;base64,")), uri[:60]
    data = base64.b64decode(uri.split(",", 1)[1])
    assert data[:3] == b"\xff\xd8\xff" or data[:8] == b"\x89PNG\r\n\x1a\n"
    return data


def _check_ui(api: Api, tmp_path: Path, pipeline_run: str, select_runs: dict[str, str], logs: list[Path]) -> None:
    """Issue 11: names, tags, the parent summary, pictures, progress, method logs, automations."""
    from dreamrelation.config import PipelineConfig
    from dreamrelation.plan import plan_relation

    plan = plan_relation("A112", PipelineConfig.model_validate(_pipeline_config(tmp_path)))
    parent = api.run(pipeline_run)
    assert parent["name"] == f"a112-relation-pipeline-{plan['train_relation'].fingerprint[:8]}"
    assert {"relation:A112", "stage:relation_pipeline"} <= set(parent["tags"])
    children = {run["name"]: run for run in api.children(pipeline_run)}
    stages = ("select_clips", "write_captions", "encode_latents", "make_masks", "train_relation")
    for stage in stages:
        name = f"a112-{stage.replace('_', '-')}-{plan[stage].fingerprint[:8]}"
        assert name in children, sorted(children)
        assert {"relation:A112", f"stage:{stage}"} <= set(children[name]["tags"])
    for relation, run_id in select_runs.items():  # deployment runs are named and tagged too
        run = api.run(run_id)
        assert re.fullmatch(rf"{relation.lower()}-select-clips-[0-9a-f]{{8}}", run["name"]) and f"relation:{relation}" in run["tags"]

    # The parent run's own artifact: every stage, built, with its subflow run and artifact URI.
    summary = api.artifacts([pipeline_run])["a112-pipeline-summary"]
    assert summary["type"] == "markdown"
    for stage in stages:
        assert re.search(rf"\| {stage} \| \*\*built\*\* \| [\d.:]+( s)? \| .*a112-{stage.replace('_', '-')}-", summary["data"]), summary["data"]
    assert "| evaluate | not run | | | stop_after=train_relation |" in summary["data"]

    # Pictures: the masks table (markdown) and the training sample (image artifact), small JPEGs.
    artifacts = api.artifacts([run["id"] for run in children.values()])
    masks = artifacts["a112-masks"]["data"]
    pictures = re.findall(r"\((data:image/[a-z]+;base64,[A-Za-z0-9+/=]+)\)", masks)
    assert pictures and all(len(_jpeg(uri)) < 30_000 for uri in pictures)
    assert "S1 (left, orange)" in masks and "file://" not in masks
    sample = artifacts["a112-train-sample"]
    assert sample["type"] == "image" and "step 2" in sample["description"] and len(_jpeg(sample["data"])) < 50_000
    progress = artifacts["a112-train-steps"]
    assert progress["type"] == "progress" and progress["data"] == 100.0
    assert re.match(r"training steps: 2/2 · loss_rec [\d.e+-]+ .*elapsed", progress["description"]), progress["description"]

    # The method's INFO lines (training loss per step, logger dreamrelation.train) in the train run's log.
    train_run = next(run["id"] for name, run in children.items() if name.startswith("a112-train-relation-"))
    _wait_for(
        "the training-loss lines in the train run's log",
        lambda: any(name == "dreamrelation.train" and "loss_rec=" in message for name, message in api.log_records(train_run)),
        30, logs,
    )

    automations = api.call("POST", "/automations/filter", {})
    assert len(automations) == 6
    for automation in automations:
        assert "for that" in automation["description"] and automation["name"].split("-after-")[0] in automation["description"]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_deployments_triggers_and_events_on_a_real_server(tmp_path):
    from dreamrelation.config import PipelineConfig
    from dreamrelation.data.store import ArtifactStore
    from dreamrelation.plan import plan_relation

    home = tmp_path / "prefect-home"
    home.mkdir()
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        PREFECT_UI_STATIC_DIRECTORY=str(home / "ui"),
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_PREFETCH_SECONDS="5",
        PREFECT_CLI_COLORS="false",
        PREFECT_CLI_WRAP_LINES="false",
        PYTHONUNBUFFERED="1",
    )
    server_log, worker_log = tmp_path / "server.log", tmp_path / "worker.log"
    logs = [server_log, worker_log]
    api = Api(api_url)
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    server = worker = None
    try:
        server = _start([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, server_log)

        def healthy() -> bool:
            if server.poll() is not None:
                pytest.fail(f"the server exited:\n{server_log.read_text()}")
            try:
                return api.http.get("/health").status_code == 200
            except httpx.HTTPError:
                return False

        _wait_for("the Prefect server", healthy, 90, logs)
        timings["server"] = time.monotonic() - t0

        _prefect(env, "work-pool", "create", "--type", "process", "gpu")
        timings["pool"] = time.monotonic() - t0
        _prefect(env, "--no-prompt", "deploy", "--all", timeout=180)
        timings["deploy"] = time.monotonic() - t0
        print("e2e timings so far:", timings)
        worker = _start([PREFECT, "worker", "start", "--pool", "gpu", "--work-queue", "cpu", "--name", "e2e-cpu"], env, worker_log)

        # Two stage chains (select-clips deployment) and one whole-pipeline run.
        started: dict[str, str] = {}
        for relation in ("A058", "A055"):
            params = json.dumps({"relation": relation, "config": _config(tmp_path, relation)})
            out = _prefect(env, "deployment", "run", "select-clips/select-clips", "--params", params)
            started[relation] = re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)
        pipeline_config = _pipeline_config(tmp_path)
        created = api.call(  # the REST call behind `deployment run`, sent to the `cpu` queue
            "POST",
            f"/deployments/{api.deployment_id('relation-pipeline/relation-pipeline')}/create_flow_run",
            {"parameters": {"relation": "A112", "config": pipeline_config, "stop_after": "train_relation"},
             "work_queue_name": "cpu"},
        )
        started["A112"] = created["id"]

        _wait_for("the select-clips and pipeline runs", lambda: _final([api.run(i) for i in started.values()]), 240, logs)
        for relation, run_id in started.items():
            run = api.run(run_id)
            assert _state(run) == "COMPLETED", f"{relation}: {run['state']}"
        timings["select runs"] = time.monotonic() - t0
        # method-code logs reach the run's log (PREFECT_LOGGING_EXTRA_LOGGERS in the job env)
        _wait_for(
            "the dreamrelation.select warning in the A055 run's log",
            lambda: any(
                name == "dreamrelation.select" and "taking all" in message
                for name, message in api.log_records(started["A055"])
            ),
            30, logs,
        )

        # select-clips done -> write-captions for the same relation, with the same config.
        def captions_done() -> list[dict[str, Any]] | None:
            runs = api.runs("write-captions/write-captions")
            return runs if len(runs) >= 2 and _final(runs) else None

        captions = _wait_for("the triggered write-captions runs", captions_done, 120, logs)
        timings["triggered captions"] = time.monotonic() - t0
        by_relation = _by_relation(captions)
        assert sorted(by_relation) == ["A055", "A058"]  # none for A112: its stages ran in the pipeline
        for relation, runs in by_relation.items():
            assert len(runs) == 1 and _state(runs[0]) == "COMPLETED"
            assert runs[0]["parameters"]["config"]["select"]["dataset_root"] == _config(tmp_path, relation)["select"]["dataset_root"]

        # write-captions done -> encode-latents and make-masks for the same relation (Scheduled:
        # no worker polls the gpu queue in this test).
        for deployment in ("encode-latents/encode-latents", "make-masks/make-masks"):
            _wait_for(f"triggered {deployment} runs", lambda d=deployment: len(api.runs(d)) >= 2, 60, logs)
            grouped = _by_relation(api.runs(deployment))
            assert sorted(grouped) == ["A055", "A058"] and all(len(r) == 1 for r in grouped.values()), deployment
            assert grouped["A058"][0]["parameters"]["config"]["root"] == str(tmp_path / "artifacts")

        # Artifacts in the store, completion events with payloads.
        for relation in ("A058", "A055", "A112"):
            config = _pipeline_config(tmp_path) if relation == "A112" else _config(tmp_path, relation)
            plan = plan_relation(relation, PipelineConfig.model_validate(config))
            store = ArtifactStore(tmp_path / "artifacts")
            for stage in ("select_clips", "write_captions"):
                assert store.is_complete(plan[stage].key), f"{relation} {stage} missing"
        keys = api.artifact_keys()
        assert {"a058-clips", "a055-clips", "a112-masks"} <= keys
        assert not {key for key in keys if key.endswith("-store")}  # a local root: no dead file:// links
        expected = {
            (f"dreamrelation.{stage}.completed", f"dreamrelation.relation.{relation}")
            for relation in ("A058", "A055", "A112")
            for stage in ("select_clips", "write_captions")
        } | {
            (f"dreamrelation.{stage}.completed", "dreamrelation.relation.A112")
            for stage in ("encode_latents", "make_masks", "train_relation")
        }

        def all_events() -> list[dict[str, Any]] | None:  # the server stores events in batches
            events = api.events("dreamrelation.")
            return events if {(e["event"], e["resource"]["prefect.resource.id"]) for e in events} >= expected else None

        events = _wait_for("the completion events", all_events, 30, logs)
        assert len(events) == len(expected)
        for event in events:
            relation = event["resource"]["prefect.resource.id"].rsplit(".", 1)[1]
            assert event["payload"]["relation"] == relation
            assert Path(event["payload"]["uri"]).exists()
            deployments = [r["prefect.resource.name"] for r in event["related"] if r["prefect.resource.role"] == "deployment"]
            assert deployments == ([] if relation == "A112" else [event["event"].split(".")[1].replace("_", "-")])

        # The latents+masks join is per relation: A058 latents, A055 masks, A058 masks -> A058 only.
        config = _config(tmp_path, "A058")
        _send_events(api_url, [
            ("encode_latents", "A058", "encode-latents", config),
            ("make_masks", "A055", "make-masks", _config(tmp_path, "A055")),
            ("make_masks", "A058", "make-masks", config),
        ])
        _wait_for("the triggered train-relation run", lambda: api.runs("train-relation/train-relation"), 30, logs)
        time.sleep(3.0)  # a wrong extra run (A055) would show up by now
        train = api.runs("train-relation/train-relation")
        assert [r["parameters"]["relation"] for r in train] == ["A058"]
        assert train[0]["parameters"]["config"] == config

        _check_ui(api, tmp_path, started["A112"], {r: started[r] for r in ("A058", "A055")}, logs)
        timings["total"] = time.monotonic() - t0
        print("e2e timings (s since start):", {k: round(v, 1) for k, v in timings.items()})
    finally:
        _stop(worker)
        _stop(server)
        api.http.close()
