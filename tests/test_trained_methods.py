"""Evaluation methods the pipeline trains itself (issue 22 §3: the direct-LoRA baseline beside DreamRelation)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dreamrelation.config import ConfigError, load_config
from dreamrelation.evaluation.config import EvalMethod, EvaluationError
from dreamrelation.evaluation.generate import resolve_lora
from dreamrelation.plan import plan_relation, trained_key

DIRECT = "{name: Direct LoRA, source: trained, train: {lora: {mode: direct}, hmt: false, rcl: false}}"
BASE = "{name: Mochi (base), source: base}"
OWN = "{name: DreamRelation, source: relation_lora}"


def test_a_trained_method_gets_its_own_training_run_and_joins_the_evaluate_key() -> None:
    plain = plan_relation("A058", load_config())
    config = load_config(None, [f"evaluate.methods=[{OWN}, {DIRECT}, {BASE}]"])
    plan = plan_relation("A058", config)
    direct = plan[trained_key("direct-lora")]
    assert direct.stage == "train_relation" and direct.key.startswith("relations/A058/runs/train-")
    assert direct.key != plan["train_relation"].key
    assert plan["train_relation"] == plain["train_relation"]  # the relation's own run is untouched
    assert plan["evaluate"].key != plain["evaluate"].key
    more_steps = plan_relation("A058", load_config(None, [f"evaluate.methods=[{OWN}, {DIRECT}, {BASE}]", "train.steps=7"]))
    assert more_steps[trained_key("direct-lora")].key != direct.key  # the baseline follows the pipeline's training


def test_a_trained_method_without_overrides_is_the_relations_own_run() -> None:
    config = load_config(None, [f"evaluate.methods=[{OWN}, {{name: Again, source: trained}}]"])
    plan = plan_relation("A058", config)
    assert plan[trained_key("again")].key == plan["train_relation"].key


def test_methods_without_train_overrides_keep_their_keys() -> None:
    assert "train" not in EvalMethod(name="DreamRelation").key_dump()
    assert EvalMethod(name="X", source="trained", train={"hmt": False}).key_dump()["train"] == {"hmt": False}


def test_bad_trained_methods_are_named() -> None:
    with pytest.raises(ConfigError, match=r"evaluate.methods\[1\] \(Bad\).train: lora.mode: Input should be"):
        load_config(None, [f"evaluate.methods=[{OWN}, {{name: Bad, source: trained, train: {{lora: {{mode: duo}}}}}}]"])
    with pytest.raises(ConfigError, match="train overrides are only used with source 'trained'"):
        load_config(None, ["evaluate.methods=[{name: B, source: base, train: {hmt: false}}]"])
    method = EvalMethod(name="Direct LoRA", source="trained")
    with pytest.raises(EvaluationError, match="run train_relation"):
        resolve_lora(method, "A058", None, {})


def test_resolve_lora_finds_a_trained_methods_file(tmp_path: Path) -> None:
    method = EvalMethod(name="Direct LoRA", source="trained")
    missing = tmp_path / "nothing.safetensors"
    with pytest.raises(EvaluationError, match="does not exist"):
        resolve_lora(method, "A058", None, {"direct-lora": missing})
