"""Stage flows through a real (ephemeral) Prefect server: build, skip on rerun, bad input."""

import json

import pytest

from dreamrelation.config import PipelineConfig
from dreamrelation.data.store import ArtifactStore
from dreamrelation.plan import plan_relation


def _config(tmp_path, synthetic_root, **select):
    return PipelineConfig(
        root=str(tmp_path / "artifacts"),
        synthetic=None,
        select={"dataset_root": str(synthetic_root), "clips_per_relation": 3, **select},
    )


def _logs(flow_run_id, expect: str, timeout: float = 20.0) -> str:
    """The run's log text from the API once it contains `expect` (logs are sent in batches)."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=5)
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            text = "\n".join(log.message for log in logs)
            if expect in text or time.monotonic() > deadline:
                return text
            time.sleep(0.5)


def test_select_and_captions_flows_build_then_skip(prefect_harness, tmp_path, synthetic_root):
    from dreamrelation.flows.select_clips import select_clips_flow
    from dreamrelation.flows.write_captions import write_captions_flow

    config = _config(tmp_path, synthetic_root)
    plan = plan_relation("A058", config)
    first = select_clips_flow(relation="A058", config=config)
    # lazy selection (issue 15): it stops at the third usable clip; 3 faulty clips were met, 2 never opened
    assert not first.skipped and first.summary == {"selected": 3, "available": 3, "dropped": 3, "unchecked": 2}
    manifest = json.loads((tmp_path / "artifacts" / plan["select_clips"].key).read_text())
    assert len(manifest["clips"]) == 3 and manifest["fingerprint"] == plan["select_clips"].fingerprint

    captions = write_captions_flow(relation="A058", config=config)
    sidecars = tmp_path / "artifacts" / plan["write_captions"].key / "A058"
    assert sorted(p.suffix for p in sidecars.iterdir()) == [".avi"] * 3 + [".txt"] * 3
    captioned = json.loads((tmp_path / "artifacts" / plan["write_captions"].key / "manifest.json").read_text())
    assert {c["caption"] for c in captioned["clips"]} == {"A person is shaking hands with a person."}

    state = select_clips_flow(relation="A058", config=config, return_state=True)
    again = state.result()
    assert again.skipped and again.uri == first.uri
    assert "already complete" in _logs(state.state_details.flow_run_id, "already complete")
    assert write_captions_flow(relation="A058", config=config).skipped and not captions.skipped

    rebuilt = select_clips_flow(relation="A058", config=config, force=True)
    assert not rebuilt.skipped
    assert ArtifactStore(config.root).is_complete(plan["select_clips"].key)


def test_changed_config_gets_a_new_artifact(prefect_harness, tmp_path, synthetic_root):
    from dreamrelation.flows.select_clips import select_clips_flow

    a = select_clips_flow(relation="A055", config=_config(tmp_path, synthetic_root))
    b = select_clips_flow(relation="A055", config=_config(tmp_path, synthetic_root, seed=7))
    assert a.uri != b.uri and not b.skipped


def test_pipeline_rejects_unknown_relation_and_empty_root(prefect_harness, tmp_path, synthetic_root):
    from dreamrelation.data.relations import RelationError
    from dreamrelation.data.select import SelectionError
    from dreamrelation.flows.pipeline import relation_pipeline
    from dreamrelation.flows.select_clips import select_clips_flow

    with pytest.raises(RelationError, match="unknown relation 'A001'"):
        relation_pipeline(relation="A001", config=_config(tmp_path, synthetic_root))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SelectionError, match="contains no NTU clips"):
        select_clips_flow(relation="A058", config=_config(tmp_path, empty))
    assert not list((tmp_path / "artifacts").rglob("*.complete.json"))


# --------------------------------------------------------------------------- what the UI shows (issue 11)
def _artifacts(flow_run_id) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in found if a.key}


def _child_runs(parent_run_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_run_id])))


def _flow_run(run_id):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def test_pipeline_run_summary_names_tags_and_dropped_clips(prefect_harness, tmp_path, synthetic_root):
    import re

    from dreamrelation.flows.pipeline import relation_pipeline

    config = _config(tmp_path, synthetic_root)
    plan = plan_relation("A112", config)
    runs = []
    for _ in range(2):  # built, then reused
        state = relation_pipeline(relation="A112", config=config, stop_after="write_captions", return_state=True)
        assert state.is_completed()
        runs.append(state.state_details.flow_run_id)

    parent = _flow_run(runs[1])
    assert parent.name == f"a112-relation-pipeline-{plan['write_captions'].fingerprint[:8]}"
    assert {"relation:A112", "stage:relation_pipeline", "dreamrelation"} <= set(parent.tags)
    children = {run.name: run for run in _child_runs(runs[1])}
    for stage in ("select_clips", "write_captions"):
        name = f"a112-{stage.replace('_', '-')}-{plan[stage].fingerprint[:8]}"
        assert name in children and {"relation:A112", f"stage:{stage}"} <= set(children[name].tags)

    for run_id, result in zip(runs, ("built", "reused")):
        summary = _artifacts(run_id)["a112-pipeline-summary"]
        assert summary.type == "markdown"
        text = summary.data
        assert re.search(rf"\| select_clips \| \*\*{result}\*\* \| [\d.]+ s \| \S.* \| `{re.escape(str(tmp_path))}/", text)
        assert f"| write_captions | **{result}** |" in text
        for stage in ("encode_latents", "make_masks", "train_relation", "evaluate"):
            assert f"| {stage} | not run | | | stop_after=write_captions |" in text
    assert not {key for key in _artifacts(runs[0]) if key.endswith("-store")}  # local root: no dead file:// links

    # the parent run's log ends with the table the CLI prints (issue 24)
    for run_id, result in zip(runs, ("built", "reused")):
        logs = _logs(run_id, "write_captions ")
        assert "relation  stage           status   artifact" in logs, logs[-2000:]
        for stage in ("select_clips", "write_captions"):
            assert re.search(rf"A112\s+{stage}\s+{result}\s+{re.escape(str(tmp_path))}/", logs), logs[-2000:]

    select_run = next(run for name, run in children.items() if "select-clips" in name)
    first_select = next(run for run in _child_runs(runs[0]) if "select-clips" in run.name)
    logs = _logs(first_select.id, "dropped")
    assert re.search(r"select_clips \[A112\]: dropped S\d+C\d+P\d+R\d+A112: \S", logs), logs[-2000:]
    assert "already complete" in _logs(select_run.id, "already complete")


def test_masks_table_shows_pictures_and_subject_order(prefect_harness, tmp_path, synthetic_root):
    import base64
    import re

    from dreamrelation.flows.make_masks import make_masks_flow
    from dreamrelation.flows.select_clips import select_clips_flow

    config = _config(tmp_path, synthetic_root)
    selected = select_clips_flow(relation="A055", config=config, return_state=True)
    state = make_masks_flow(relation="A055", config=config, return_state=True)
    assert _flow_run(state.state_details.flow_run_id).name.startswith("a055-make-masks-")
    # one naming scheme: every key of a relation starts with it (issue 24)
    assert "a055-clips" in _artifacts(selected.state_details.flow_run_id)
    assert {"a055-masks", "a055-make-masks"} <= set(_artifacts(state.state_details.flow_run_id))
    text = _artifacts(state.state_details.flow_run_id)["a055-masks"].data
    assert "| clip | status | S1 (left, orange) | S2 (right, blue) |" in text and "file://" not in text
    images = re.findall(r"!\[[^\]]*\]\(data:image/jpeg;base64,([A-Za-z0-9+/=]+)\)", text)
    assert len(images) == state.result().summary["ok"] == 3
    for payload in images:
        data = base64.b64decode(payload)
        assert data[:3] == b"\xff\xd8\xff" and len(data) < 24_000
    assert re.search(r"\| ok \| [\d.]+ % of pixels \| [\d.]+ % of pixels \|", text)
    # the one rounding rule (4 significant figures), as in every other table
    from dreamrelation.data.masks import read_mask_status
    from dreamrelation.data.previews import format_sig

    for record in read_mask_status(state.result().uri)["clips"]:
        if record["status"] == "ok":
            s1, s2 = (format_sig(100 * c) for c in record["coverage"])
            assert f"| {record['clip_id']} | ok | {s1} % of pixels | {s2} % of pixels |" in text


def test_method_logs_reach_the_run_log_at_info(prefect_harness):
    import logging

    from prefect import flow

    from dreamrelation.tasks.runs import stage_run

    method = logging.getLogger("dreamrelation.test_method")

    @flow(name="method-logs-test")
    def logs_flow() -> None:
        with stage_run("A058", "train_relation"):
            method.info("step 1/2 loss_rec=0.12345 (method line)")
        method.info("after the stage: not routed")

    state = logs_flow(return_state=True)
    text = _logs(state.state_details.flow_run_id, "method line")
    assert "step 1/2 loss_rec=0.12345 (method line)" in text and "not routed" not in text
    assert logging.getLogger("dreamrelation").level == logging.NOTSET  # restored
    assert {"relation:A058", "stage:train_relation"} <= set(_flow_run(state.state_details.flow_run_id).tags)


def test_pipeline_summary_is_published_when_a_stage_fails(prefect_harness, tmp_path, synthetic_root):
    from dreamrelation.flows.pipeline import relation_pipeline

    config = _config(tmp_path, synthetic_root).model_copy(
        update={"captions": PipelineConfig().captions.model_copy(update={"captions_file": str(tmp_path / "missing.csv")})}
    )
    state = relation_pipeline(relation="A058", config=config, return_state=True)
    assert state.is_failed()
    text = _artifacts(state.state_details.flow_run_id)["a058-pipeline-summary"].data
    assert "1 built, 0 reused, 1 failed" in text
    assert "| select_clips | **built** |" in text and "| write_captions | **failed** |" in text
    assert "| encode_latents | not run | | | an earlier stage failed |" in text


# --------------------------------------------------------------------------- inputs checked before the first stage (issue 24 §5)
@pytest.mark.parametrize("bad", ["model_dir", "prompts"])
def test_bad_inputs_fail_the_pipeline_before_select_writes_anything(prefect_harness, tmp_path, synthetic_root, bad):
    from dreamrelation.flows.pipeline import relation_pipeline
    from dreamrelation.preflight import InputError

    config = _config(tmp_path, synthetic_root)
    if bad == "model_dir":
        (tmp_path / "mochi").mkdir()
        config = config.model_copy(update={"model": config.model.model_copy(update={"model_dir": str(tmp_path / "mochi")})})
        message = f"model.model_dir: Mochi-1 model folder {tmp_path / 'mochi'} is incomplete"
    else:
        evaluate = config.evaluate.model_copy(update={"prompts_path": str(tmp_path / "prompts.csv")})
        config = config.model_copy(update={"evaluate": evaluate})
        message = f"evaluate.prompts_path: prompt file {tmp_path / 'prompts.csv'} does not exist"
    with pytest.raises(InputError, match=message):
        relation_pipeline(relation="A058", config=config)
    assert not list((tmp_path / "artifacts").rglob("manifest-*")) and not list((tmp_path / "artifacts").rglob("*.complete.json"))
    relation_pipeline(relation="A058", config=config, stop_after="select_clips")  # a run that does not read them


def test_the_demo_checks_every_relation_before_the_first_one_runs(prefect_harness, tmp_path, synthetic_root):
    from dreamrelation.flows.pipeline import demo_flow
    from dreamrelation.preflight import InputError

    prompts = tmp_path / "prompts.csv"
    prompts.write_text("relation,prompt\nA058,A bear is shaking hands with a raccoon.\n")
    config = _config(tmp_path, synthetic_root)
    config = config.model_copy(update={"evaluate": config.evaluate.model_copy(update={"prompts_path": str(prompts)})})
    with pytest.raises(InputError, match="evaluate.prompts_path: no evaluation prompts for relation A055"):
        demo_flow(relations=["A058", "A055"], config=config)
    assert not (tmp_path / "artifacts" / "relations").exists()  # A058 did not start either


# --------------------------------------------------------------------------- issue 24: logs and names of parent runs
def _result(relation: str, stage: str, skipped: bool = False):
    from dreamrelation.tasks.common import StageResult

    return StageResult(stage, relation, f"/r/{relation}/{stage}", "0" * 16, skipped, {})


def test_demo_run_logs_every_relations_stage_table(prefect_harness, monkeypatch):
    from dreamrelation.flows import pipeline

    monkeypatch.setattr(pipeline, "relation_pipeline", lambda relation, config, force: [
        _result(relation, "select_clips", skipped=True), _result(relation, "write_captions")])
    monkeypatch.setattr(pipeline, "evaluation_report_flow", lambda relations, config: "/r/reports/evaluation-x")
    monkeypatch.setattr(pipeline, "check_inputs", lambda *args, **kwargs: None, raising=False)  # no real inputs here
    state = pipeline.demo_flow(relations=["A058", "A055"], return_state=True)
    assert state.is_completed()
    logs = _logs(state.state_details.flow_run_id, "A055      write_captions")
    assert "relation  stage           status   artifact" in logs
    for relation in ("A058", "A055"):
        assert f"{relation}      select_clips    reused   /r/{relation}/select_clips" in logs
        assert f"{relation}      write_captions  built    /r/{relation}/write_captions" in logs


def test_toy_runs_have_readable_names_and_the_study_logs_its_table(prefect_harness, monkeypatch):
    from dreamrelation.config import ToyConfig
    from dreamrelation.flows import toy
    from dreamrelation.tasks.runs import toy_run_name

    monkeypatch.setattr(toy, "pretrain_base_task", lambda config, force=False: _result("toy-world", "pretrain_base", True))
    monkeypatch.setattr(toy, "study_task", lambda config, force=False: _result("toy-world", "study"))
    config = ToyConfig().quick()
    base = toy.pretrain_base_flow(config=config, return_state=True)
    assert _flow_run(base.state_details.flow_run_id).name == toy_run_name("pretrain_base", config)
    assert toy_run_name("pretrain_base", config).startswith("toy-base-")
    study = toy.study_flow(config=config, return_state=True)
    assert _flow_run(study.state_details.flow_run_id).name == toy_run_name("study", config)
    logs = _logs(study.state_details.flow_run_id, "toy-world study")
    assert "toy-world pretrain_base   reused" in logs and "toy-world study           built" in logs


def test_fan_out_log_table_shows_durations_like_the_summary(monkeypatch):
    from dreamrelation.flows import fanout

    lines: list[str] = []

    class Logger:
        def info(self, message, *args):
            lines.append(message % args)

    monkeypatch.setattr(fanout, "get_run_logger", lambda: Logger())
    monkeypatch.setattr(fanout, "create_table_artifact", lambda **kwargs: None)
    monkeypatch.setattr(fanout, "publish_fan_out_summary", lambda rows, config: "")
    statuses = [fanout.RelationRunStatus("A058", "a058-relation-pipeline-1234abcd", "Completed", 75.04, ""),
                fanout.RelationRunStatus("A055", "a055-relation-pipeline-5678abcd", "Failed", 3.25, "boom")]
    fanout._report(statuses, PipelineConfig())
    assert "A058      Completed      1:15  a058-relation-pipeline-1234abcd" in lines[0]
    assert "A055      Failed        3.2 s  a055-relation-pipeline-5678abcd boom" in lines[0]
