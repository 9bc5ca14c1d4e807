"""The evaluate stage with `relation_judge: toy` (issue 13 §3: the toy judge beside the VLM).

Hand-rendered world clips are written as a method's generated videos, so the stage generates
nothing and scores them through the real scoring and report code in a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from dreamrelation.config import PipelineConfig
from dreamrelation.data.video import write_video
from dreamrelation.data.world import ClipSpec, SubjectSpec, WorldConfig, caption, render_clip, sample_specs
from dreamrelation.evaluation.config import EvalConfig, EvalMethod, EvaluationError
from dreamrelation.evaluation.generate import plan_videos
from dreamrelation.evaluation.report import REPORT_FILE, combine_results, combined_markdown
from dreamrelation.evaluation.score import check_metric_inputs, ensure_tiny_eval_models, load_metric_models
from dreamrelation.model.config import BaseModelConfig, SampleConfig, toy_sample_config
from dreamrelation.perception.config import VLMConfig
from dreamrelation.perception.vlm import summarize_answers
from dreamrelation.plan import plan_relation
from dreamrelation.stages.evaluate import evaluate_relation
from dreamrelation.tasks.evaluation import metric_rows

WORLD = WorldConfig()
KINDS = ["circle", "square", "triangle", "star", "dog"]
METHODS = [EvalMethod(name="Right", source="base"), EvalMethod(name="Wrong", source="base")]


def _no_model(tmp_path: Path) -> BaseModelConfig:
    """A base model that does not exist: generating anything would fail."""
    return BaseModelConfig(profile="mochi-1", model_dir=str(tmp_path / "no-model"))


def _config(tmp_path: Path, prompts: list[str], **update: Any) -> EvalConfig:
    path = tmp_path / "prompts.yaml"
    path.write_text(yaml.safe_dump({"push": prompts}))
    fields: dict[str, Any] = {
        "methods": METHODS,
        "prompts_path": str(path),
        "seeds": [0],
        "sample": toy_sample_config(WORLD),
        "relation_judge": "toy",
        # set but unused with the toy judge: the folder does not exist, so loading it would fail
        "vlm": VLMConfig(backend="transformers", model_dir=str(tmp_path / "no-vlm")),
        **update,
    }
    return EvalConfig(**fields)


def _as_persons_orbiting(spec: ClipSpec) -> ClipSpec:
    """The prompt's subjects redrawn as stick-figure persons, doing another relation."""
    persons = tuple(SubjectSpec(**{**s.model_dump(), "kind": "person"}) for s in spec.subjects)
    return ClipSpec(relation="orbit", subjects=persons, seed=spec.seed)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def judged(tmp_path_factory) -> tuple[dict[str, Any], Path]:
    """'Right' shows every prompt as asked; 'Wrong' shows persons circling instead of the prompted push."""
    tmp_path = tmp_path_factory.mktemp("toy-eval")
    specs = sample_specs(WORLD, 3, relations=["push"], kinds=KINDS, seed=5)
    prompts = [caption(spec, WORLD) for spec in specs]
    config = _config(tmp_path, prompts)
    out = tmp_path / "eval"
    jobs = plan_videos(config.methods, prompts, config.seeds)
    for method_jobs, show in ((jobs["right"], lambda s: s), (jobs["wrong"], _as_persons_orbiting)):
        for job, spec in zip(method_jobs, specs):
            write_video(out / job.file, render_clip(show(spec), WORLD).video, WORLD.fps)
    results = evaluate_relation("push", config, _no_model(tmp_path), None, out)
    return results, out


def test_toy_judge_scores_world_clips_through_the_evaluate_stage(judged) -> None:
    results, out = judged
    assert results["generation"] == {"generated": 0, "skipped": 6}
    right, wrong = results["methods"]
    assert right["relation_accuracy"]["value"] == 1.0
    assert right["subject_fidelity"]["value"] == 1.0
    assert right["appearance_leakage"]["value"] == 0.0
    assert wrong["relation_accuracy"]["value"] == 0.0
    assert wrong["subject_fidelity"]["value"] == 0.0
    assert wrong["appearance_leakage"]["value"] == 1.0
    for method in (right, wrong):
        assert method["relation_accuracy"]["judge"] == "toy" and method["relation_accuracy"]["n"] == 3
        assert "answers" not in method["relation_accuracy"]  # no VLM was asked
    assert [v["judged_relation"] for v in right["videos"]] == ["push"] * 3
    assert [v["relation_accuracy"] for v in wrong["videos"]] == [0.0] * 3
    assert [v["appearance_leakage"] for v in wrong["videos"]] == [1.0] * 3
    written = json.loads((out / "results.json").read_text())
    assert written["config"]["relation_judge"] == "toy"
    report = (out / REPORT_FILE).read_text()
    assert "| Method | Relation Accuracy ↑ | Subject Fidelity ↑ | Appearance Leakage ↓ | Joint ↑ | CLIP-T ↑ |" in report
    assert "| Right | 1 ± 0 | 1 | 0 | 1 | n/a |" in report
    assert right["joint"]["value"] == 1.0 and wrong["joint"]["value"] == 0.0  # relation and both subjects
    assert "not how it does on Mochi-1" in report
    assert "toy-world judge" in report and "VLM" not in report


def test_ui_metric_table_shows_the_judge_columns(judged) -> None:
    results, _ = judged
    rows = metric_rows(results["methods"])
    assert list(rows[1])[:4] == ["method", "relation accuracy", "subject fidelity", "appearance leakage"]
    assert (rows[1]["relation accuracy"], rows[1]["subject fidelity"], rows[1]["appearance leakage"]) == ("0 ± 0", "0", "1")


def test_combined_report_pools_the_judge_metrics_over_videos(judged) -> None:
    results, _ = judged
    other = {**results, "relation": "push-again"}
    combined = combine_results([results, other])
    right = combined["average"][0]
    assert right["relation_accuracy"]["value"] == 1.0 and right["relation_accuracy"]["n"] == 6
    assert right["subject_fidelity"]["value"] == 1.0 and right["appearance_leakage"]["n"] == 6
    markdown = combined_markdown(combined)
    assert markdown.count("| Method | Relation Accuracy ↑ | Subject Fidelity ↑ | Appearance Leakage ↓ | Joint ↑ |") == 3
    assert "toy-world judge" in markdown

    # One relation scored by a VLM instead: relation accuracy is the mean of the relations'
    # values, subject fidelity comes from the judged relation only.
    vlm_methods = []
    for method in results["methods"]:
        accuracy = summarize_answers([["yes", "no", "no"]]).to_dict()
        entry = {"computed": True, "value": accuracy.pop("mean"), "std": accuracy.pop("std"), "reason": None, **accuracy}
        kept = {k: v for k, v in method.items() if k not in ("subject_fidelity", "appearance_leakage", "joint")}
        vlm_methods.append({**kept, "relation_accuracy": entry})
    vlm = {**results, "relation": "push-vlm", "methods": vlm_methods,
           "config": {**results["config"], "relation_judge": "vlm"}}
    mixed = combine_results([results, vlm])["average"][0]
    assert mixed["relation_accuracy"]["value"] == pytest.approx((1.0 + 1 / 3) / 2)
    assert mixed["subject_fidelity"]["value"] == 1.0 and mixed["subject_fidelity"]["n"] == 3
    assert "scored by the toy-world judge" in mixed["subject_fidelity"]["how"]


def test_a_prompt_the_world_cannot_parse_fails_before_any_video(tmp_path: Path) -> None:
    prompts = ["A dark red triangle is pushing a light blue dog.", "A kangaroo is punching a polar bear."]
    config = _config(tmp_path, prompts)
    out = tmp_path / "eval"
    with pytest.raises(EvaluationError) as error:
        evaluate_relation("push", config, _no_model(tmp_path), None, out)
    message = str(error.value)
    assert "1 prompt(s) are not toy-world captions: 'A kangaroo is punching a polar bear.'." in message
    assert "world-style prompts" in message and "'A dark red triangle is pushing a light blue dog.'" in message
    assert not (out / "videos").exists()
    # The VLM judge takes any prompt.
    check_metric_inputs(config.model_copy(update={"relation_judge": "vlm", "vlm": None}), prompts)


def test_videos_too_small_for_the_judge_fail_early(tmp_path: Path) -> None:
    config = _config(tmp_path, ["A dark red triangle is pushing a light blue dog."],
                     sample=SampleConfig(frames=1, height=64, width=96))
    with pytest.raises(EvaluationError, match="at least 4 frames of 16x16 pixels.*1 frame"):
        check_metric_inputs(config, ["A dark red triangle is pushing a light blue dog."])


def test_config_toy_judge_needs_no_vlm(tmp_path: Path) -> None:
    assert EvalConfig().relation_judge == "vlm"
    assert EvalConfig(relation_judge="toy").vlm is None
    with pytest.raises(ValidationError, match="relation_judge"):
        EvalConfig.model_validate({"relation_judge": "clip"})
    config = _config(tmp_path, [], build_tiny_models=True)  # a VLM configured, its folder missing
    check_metric_inputs(config, [])
    assert ensure_tiny_eval_models(config) == [] and not (tmp_path / "no-vlm").exists()
    models = load_metric_models(config)
    assert models.vlm is None and models.judge is not None
    with pytest.raises(EvaluationError, match="vlm.model_dir"):
        check_metric_inputs(config.model_copy(update={"relation_judge": "vlm"}), [])


def test_changing_the_judge_reruns_evaluation_only() -> None:
    config = PipelineConfig()
    toy = config.model_copy(update={"evaluate": config.evaluate.model_copy(update={"relation_judge": "toy"})})
    before, after = plan_relation("A058", config), plan_relation("A058", toy)
    assert before["evaluate"].key != after["evaluate"].key
    assert before["train_relation"].key == after["train_relation"].key
