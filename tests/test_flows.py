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
    assert not first.skipped and first.summary == {"selected": 3, "available": 5, "dropped": 5}
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
