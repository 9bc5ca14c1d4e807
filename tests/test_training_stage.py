"""The train_relation stage: a worker killed mid-training resumes from its last checkpoint.

The artifact root is an fsspec URL (in-memory filesystem) and the local working copy is deleted
between the attempts, as when the rerun lands on another machine.
"""

import shutil

import pytest

from dreamrelation.config import PipelineConfig
from dreamrelation.data.store import ArtifactStore
from dreamrelation.plan import plan_relation


def test_killed_training_resumes_from_the_last_checkpoint(prefect_harness, synthetic_root, tmp_path, monkeypatch):
    from dreamrelation.flows.pipeline import relation_pipeline
    from dreamrelation.flows.train_relation import train_relation_flow
    from dreamrelation.tasks import training

    monkeypatch.chdir(tmp_path)  # the local working copy of remote runs goes to ./.dreamrelation/work
    config = PipelineConfig(
        root="memory://dr-train-stage/artifacts",
        synthetic=None,
        select={"dataset_root": str(synthetic_root), "clips_per_relation": 2},
        model={"profile": "demo", "device": "cpu", "dtype": "float32", "models_cache": str(tmp_path / "models")},
        train={**PipelineConfig().train.model_dump(), "steps": 20, "checkpoint_every": 5, "sample_every": 0},
    )
    relation_pipeline(relation="A058", config=config, stop_after="make_masks")

    real_train = training.train

    def killed_after_step_7(*args, **kwargs):
        report = kwargs["on_step"]

        def on_step(record):
            report(record)
            if record["step"] == 7:
                raise RuntimeError("worker killed")

        return real_train(*args, **{**kwargs, "on_step": on_step})

    monkeypatch.setattr(training, "train", killed_after_step_7)
    with pytest.raises(RuntimeError, match="worker killed"):
        train_relation_flow(relation="A058", config=config)
    store = ArtifactStore(config.root)
    key = plan_relation("A058", config)["train_relation"].key
    assert not store.is_complete(key)
    checkpoints = store.fs.ls(store.path(f"{key}/checkpoints"), detail=False)
    assert [c.rsplit("/", 1)[-1] for c in checkpoints] == ["step-00000005"]

    shutil.rmtree(tmp_path / ".dreamrelation" / "work")  # the rerun runs on another machine
    monkeypatch.setattr(training, "train", real_train)
    result = train_relation_flow(relation="A058", config=config)
    assert not result.skipped
    assert result.summary["resumed_from"] == 5 and result.summary["steps"] == 20
    assert store.is_complete(key)
    assert store.fs.exists(store.path(f"{key}/relation_lora.safetensors"))
    assert train_relation_flow(relation="A058", config=config).skipped
