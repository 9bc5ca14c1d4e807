"""The evaluate stage (METHOD.md §6): report tables, averaging over relations, config, and the
whole stage end to end on the tiny demo models through Prefect (resume included)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from dreamrelation.data.prompts import load_eval_prompts
from dreamrelation.evaluation.config import EvalConfig, EvalMethod, EvaluationError, tiny_eval_model_paths
from dreamrelation.evaluation.generate import eval_prompts, plan_videos, resolve_lora
from dreamrelation.evaluation.report import (
    REPORT_FILE,
    RESULTS_FILE,
    combine_results,
    combined_markdown,
    combined_report,
    format_table,
    relation_report,
)
from dreamrelation.evaluation.score import not_computed
from dreamrelation.model.config import BaseModelConfig, SampleConfig
from dreamrelation.model.sample import LoraFileError
from dreamrelation.model.train import LORA_FILE
from dreamrelation.perception.config import VLMConfig
from dreamrelation.perception.vlm import summarize_answers
from dreamrelation.stages.evaluate import evaluate_relation

# --------------------------------------------------------------------------------------------
# Report formatting
# --------------------------------------------------------------------------------------------


def _entry(value, std=None, **extra):
    return {"computed": True, "value": value, "std": std, "reason": None, **extra}


def test_format_table_matches_hand_written_markdown() -> None:
    rows = [
        {
            "method": "Mochi",
            "relation_accuracy": _entry(0.2623, 0.01234),
            "clip_t": _entry(0.32374),
            "temporal_consistency": _entry(0.98876),
            "fvd": _entry(2047.3749),
        },
        {
            "method": "DreamRelation",
            "relation_accuracy": _entry(0.4452, 0.0),
            "clip_t": _entry(0.3248),
            "temporal_consistency": _entry(0.99544),
            "fvd": not_computed("fvd.reference_videos_dir is not set"),
        },
        {"method": "A | B", "relation_accuracy": not_computed("vlm is not set"), "clip_t": None,
         "temporal_consistency": _entry(float("nan")), "fvd": _entry(12.0)},
    ]
    expected = (
        "| Method | Relation Accuracy ↑ | CLIP-T ↑ | Temporal Consistency ↑ | FVD ↓ |\n"
        "|---|---:|---:|---:|---:|\n"
        "| Mochi | 0.2623 ± 0.01234 | 0.3237 | 0.9888 | 2047 |\n"
        "| DreamRelation | 0.4452 ± 0 | 0.3248 | 0.9954 | n/a |\n"
        "| A \\| B | n/a | n/a | n/a | 12 |\n"
    )
    assert format_table(rows) == expected


def _method(name, answers, clip_t, fvd=None, relation="A058"):
    """A results.json method entry with raw VLM answers [repeat][video] and per-video CLIP-T."""
    accuracy = summarize_answers(answers, "count_as_no").to_dict()
    videos = [{"prompt_index": i, "prompt": f"p{i}", "seed": 0, "file": f"videos/x/p{i:02d}-seed0.mp4",
               "clip_t": value, "temporal_consistency": 1.0} for i, value in enumerate(clip_t)]
    return {
        "name": name,
        "slug": name.lower(),
        "source": "base",
        "lora": None,
        "n_videos": len(clip_t),
        "videos": videos,
        "clip_t": _entry(float(np.mean(clip_t)), float(np.std(clip_t))),
        "temporal_consistency": _entry(1.0, 0.0),
        "fvd": _entry(fvd) if fvd is not None else not_computed("fvd.i3d_path is not set"),
        "relation_accuracy": {**_entry(accuracy["mean"], accuracy["std"]),
                              **{k: v for k, v in accuracy.items() if k not in ("mean", "std")}},
    }


def _results(relation, name, methods):
    return {
        "version": 1,
        "relation": relation,
        "relation_name": name,
        "prompts": ["p0", "p1"],
        "seeds": [0],
        "videos_per_method": 2,
        "generation": {"generated": 2, "skipped": 0},
        "config": EvalConfig(vlm=VLMConfig(model_dir="/m", repeats=2), sample=SampleConfig.demo()).model_dump(mode="json"),
        "methods": methods,
    }


def test_relation_report_lists_reasons_and_unparseable_answers() -> None:
    results = _results("A058", "handshaking", [_method("DreamRelation", [["yes", "no"], ["yes", "maybe"]], [0.3, 0.5])])
    report = relation_report(results)
    assert report.startswith("# Evaluation: A058 (handshaking)\n")
    assert "| DreamRelation | 0.5 ± 0 | 0.4 | 1 | n/a |" in report
    assert "Unparseable VLM answers (counted as no): DreamRelation 1/4." in report
    assert "- FVD (all methods): fvd.i3d_path is not set" in report


def test_combined_results_pool_answers_and_videos_over_relations() -> None:
    a058 = _results("A058", "handshaking", [
        _method("DreamRelation", [["yes", "yes"], ["yes", "no"]], [0.2, 0.4], fvd=100.0),
        _method("Mochi", [["no", "no"], ["no", "no"]], [0.1, 0.1], fvd=300.0),
    ])
    a055 = _results("A055", "hugging other person", [
        _method("DreamRelation", [["no", "no"], ["yes", "no"]], [0.6, 0.8], fvd=200.0),
    ])
    combined = combine_results([a058, a055])
    dream, mochi = combined["average"]
    assert dream["name"] == "DreamRelation" and dream["relations"] == ["A058", "A055"]
    # Per repeat over the 4 videos: repeat 0 -> 2/4, repeat 1 -> 2/4.
    assert dream["relation_accuracy"]["value"] == pytest.approx(0.5)
    assert dream["relation_accuracy"]["std"] == pytest.approx(0.0)
    assert dream["clip_t"]["value"] == pytest.approx(0.5)  # mean of 0.2, 0.4, 0.6, 0.8
    assert dream["fvd"]["value"] == pytest.approx(150.0)  # no feature files: mean of per-relation FVDs
    assert mochi["relations"] == ["A058"] and mochi["relation_accuracy"]["value"] == 0.0

    markdown = combined_markdown(combined)
    assert "Relations: A058 (handshaking), A055 (hugging other person)." in markdown
    assert (
        "## Average over 2 relation(s)\n\n"
        "| Method | Relation Accuracy ↑ | CLIP-T ↑ | Temporal Consistency ↑ | FVD ↓ |\n"
        "|---|---:|---:|---:|---:|\n"
        "| DreamRelation | 0.5 ± 0 | 0.5 | 1 | 150 |\n"
        "| Mochi | 0 ± 0 | 0.1 | 1 | 300 |\n"
    ) in markdown
    assert "- Mochi: evaluated on A058 only." in markdown
    assert "## Evaluation: A055 (hugging other person)" in markdown
    with pytest.raises(EvaluationError, match="relations repeat"):
        combine_results([a058, a058])


# --------------------------------------------------------------------------------------------
# Config, prompts, methods
# --------------------------------------------------------------------------------------------


def test_eval_config_methods_and_demo_preset(tmp_path) -> None:
    with pytest.raises(ValueError, match="needs lora_path"):
        EvalMethod(name="Direct LoRA", source="lora_file")
    with pytest.raises(ValueError, match="only used with source 'lora_file'"):
        EvalMethod(name="Mochi", source="base", lora_path="x.safetensors")
    with pytest.raises(ValueError, match="repeated"):
        EvalConfig(methods=[EvalMethod(name="Direct LoRA", source="base"), EvalMethod(name="direct-lora", source="base")])
    assert [m.slug for m in EvalConfig().methods] == ["dreamrelation", "mochi-base"]

    demo = EvalConfig.demo(models_cache=tmp_path)
    paths = tiny_eval_model_paths(tmp_path)
    assert demo.clip.model_dir == str(paths["clip"]) and demo.vlm is not None and demo.build_tiny_models
    assert demo.prompts_per_relation == 2 and demo.sample == SampleConfig.demo()
    assert eval_prompts("A058", demo) == load_eval_prompts()["A058"][:2]
    with pytest.raises(EvaluationError, match="no evaluation prompts for relation X001"):
        eval_prompts("X001", demo)

    run = tmp_path / "runs" / "A058"
    run.mkdir(parents=True)
    (run / LORA_FILE).write_bytes(b"")
    direct = EvalMethod(name="Direct LoRA", source="lora_file", lora_path=str(tmp_path / "runs" / "{relation}"))
    with pytest.raises(LoraFileError, match=f"LoRA file {run / LORA_FILE} is not a safetensors file"):
        resolve_lora(direct, "A058", None)  # refused before any video is generated
    save_file({"transformer.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 4)}, run / LORA_FILE)
    assert resolve_lora(direct, "A058", None) == run / LORA_FILE
    with pytest.raises(EvaluationError, match="does not exist"):
        resolve_lora(direct, "A055", None)
    assert resolve_lora(EvalMethod(name="Mochi", source="base"), "A058", None) is None
    jobs = plan_videos(demo.methods, ["a", "b"], [0, 7])
    assert [j.file for j in jobs["mochi-base"]] == [
        "videos/mochi-base/p00-seed0.mp4", "videos/mochi-base/p00-seed7.mp4",
        "videos/mochi-base/p01-seed0.mp4", "videos/mochi-base/p01-seed7.mp4",
    ]


# --------------------------------------------------------------------------------------------
# The whole stage on the tiny demo models
# --------------------------------------------------------------------------------------------

TINY_SAMPLE = SampleConfig(steps=2, frames=13, height=16, width=32)


def _random_lora(model_dir: Path, path: Path) -> Path:
    """An inference LoRA with random (non-zero) B matrices: cheaper than training, visibly active."""
    from dreamrelation.model import lora
    from dreamrelation.model.config import LoraTripletConfig
    from dreamrelation.model.mochi import MOCHI

    transformer = MOCHI.load_transformer(model_dir)
    lora.add_relation_loras(transformer, LoraTripletConfig.demo())
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in transformer.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return lora.export_inference_lora(transformer, path)


def _artifact_keys(prefix: str) -> set[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_=prefix)))
    return {a.key for a in artifacts}


@pytest.mark.slow
def test_evaluate_stage_end_to_end_and_resume(prefect_harness, tmp_path) -> None:
    from dreamrelation.config import PipelineConfig
    from dreamrelation.data.store import ArtifactStore
    from dreamrelation.data.video import read_video, write_video
    from dreamrelation.flows.evaluate import evaluate_flow, evaluation_report_flow
    from dreamrelation.model.families import resolve_model_dir
    from dreamrelation.plan import plan_relation

    models = tmp_path / "models"
    base = BaseModelConfig(profile="demo", device="cpu", dtype="float32", models_cache=str(models))
    demo = EvalConfig.demo(models_cache=models)
    evaluate = demo.model_copy(update={"sample": TINY_SAMPLE, "vlm": demo.vlm.model_copy(update={"repeats": 2})})
    config = PipelineConfig(root=str(tmp_path / "artifacts"), synthetic=None, model=base, evaluate=evaluate)
    plan = plan_relation("A058", config)
    store = ArtifactStore(config.root)

    with pytest.raises(FileNotFoundError, match="run the stage that makes it first"):
        evaluate_flow(relation="A058", config=config)

    # A finished train_relation run holding only the inference LoRA.
    lora_file = _random_lora(resolve_model_dir(base), tmp_path / LORA_FILE)
    with store.write_in_place(plan["train_relation"].key, {"stage": "train_relation"}) as folder:
        shutil.copy(lora_file, folder / LORA_FILE)

    result = evaluate_flow(relation="A058", config=config)
    assert not result.skipped and result.summary["videos_generated"] == 4
    out = Path(result.uri)
    videos = sorted(p.relative_to(out).as_posix() for p in (out / "videos").rglob("*.mp4"))
    assert videos == [
        "videos/dreamrelation/p00-seed0.mp4", "videos/dreamrelation/p01-seed0.mp4",
        "videos/mochi-base/p00-seed0.mp4", "videos/mochi-base/p01-seed0.mp4",
    ]
    lora_frames, _ = read_video(out / videos[0])
    base_frames, _ = read_video(out / videos[2])
    assert lora_frames.shape == (13, 16, 32, 3)
    assert np.abs(lora_frames.astype(int) - base_frames).mean() > 0.5  # the LoRA changes the video

    results = json.loads((out / RESULTS_FILE).read_text())
    assert [m["name"] for m in results["methods"]] == ["DreamRelation", "Mochi (base)"]
    for method in results["methods"]:
        assert method["n_videos"] == 2 and len(method["videos"]) == 2
        for metric in ("clip_t", "temporal_consistency"):
            assert method[metric]["computed"] and math.isfinite(method[metric]["value"])
            assert all(-1.0 <= v[metric] <= 1.0 for v in method["videos"])
        accuracy = method["relation_accuracy"]
        assert accuracy["repeats"] == 2 and accuracy["n_videos"] == 2
        assert 0 <= accuracy["n_unparseable"] <= 4 and len(accuracy["answers"]) == 2
        if accuracy["computed"]:
            assert 0.0 <= accuracy["value"] <= 1.0 and accuracy["std"] >= 0.0
        assert method["fvd"] == not_computed("fvd.reference_videos_dir is not set (reference videos are needed)")

    report = (out / REPORT_FILE).read_text()
    assert "| Method | Relation Accuracy ↑ | CLIP-T ↑ | Temporal Consistency ↑ | FVD ↓ |" in report
    rows = [line for line in report.splitlines() if line.startswith("| DreamRelation |") or line.startswith("| Mochi (base) |")]
    assert len(rows) == 2 and all(row.endswith("| n/a |") for row in rows)
    assert "- FVD (all methods): fvd.reference_videos_dir is not set" in report
    assert {"a058-evaluate-metrics", "a058-evaluate-report"} <= _artifact_keys("a058-evaluate-%")
    assert set(result.summary["methods"]) == {"DreamRelation", "Mochi (base)"}

    again = evaluate_flow(relation="A058", config=config)
    assert again.skipped and again.uri == result.uri

    combined_uri = evaluation_report_flow(relations=["A058", "A055"], config=config)
    combined = (Path(combined_uri) / REPORT_FILE).read_text()
    assert "## Average over 1 relation(s)" in combined and "## Evaluation: A058 (handshaking)" in combined

    # Resume in a copy of the folder, as after an interruption: one video is missing, the rest is
    # reused untouched. FVD is now configured (reference videos + tiny I3D), the VLM is off.
    resumed = tmp_path / "resumed"
    shutil.copytree(out / "videos", resumed / "videos")
    (resumed / "videos/mochi-base/p01-seed0.mp4").unlink()
    mtimes = {p: p.stat().st_mtime_ns for p in resumed.rglob("*.mp4")}
    reference = tmp_path / "reference"
    rng = np.random.default_rng(0)
    for index in range(3):
        write_video(reference / f"ref{index}.mp4", rng.integers(0, 256, (13, 16, 32, 3), dtype=np.uint8), 30.0)
    fvd_config = evaluate.model_copy(update={
        "vlm": None,
        "fvd": evaluate.fvd.model_copy(update={"reference_videos_dir": str(reference), "num_frames": 10}),
    })
    second = evaluate_relation("A058", fvd_config, base, lora_file, resumed, relation_name="handshaking")
    assert second["generation"] == {"generated": 1, "skipped": 3}
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    third = evaluate_relation("A058", fvd_config, base, lora_file, resumed, relation_name="handshaking")
    assert third["generation"] == {"generated": 0, "skipped": 4}
    for method in third["methods"]:
        assert method["fvd"]["computed"] and math.isfinite(method["fvd"]["value"]) and method["fvd"]["value"] >= 0
        assert method["fvd"]["n_generated"] == 2 and method["fvd"]["n_reference"] == 3
        assert (resumed / method["fvd"]["features_file"]).is_file()
        assert method["relation_accuracy"]["reason"].startswith("vlm is not set")
    assert (resumed / "fvd" / "reference.npy").is_file()
    assert third["methods"][1]["fvd"]["value"] == pytest.approx(second["methods"][1]["fvd"]["value"])

    # Pooled FVD across "relations": the same folder under a second relation id.
    other = json.loads((resumed / RESULTS_FILE).read_text())
    other["relation"] = "A055"
    (tmp_path / "other").mkdir()
    shutil.copytree(resumed / "fvd", tmp_path / "other" / "fvd")
    (tmp_path / "other" / RESULTS_FILE).write_text(json.dumps(other))
    pooled, _ = combined_report([resumed, tmp_path / "other"])
    assert pooled["average"][0]["fvd"]["how"].startswith("generated I3D features pooled")
    assert pooled["average"][0]["fvd"]["n_generated"] == 4


def test_qkv_analysis_function_on_the_tiny_model(tmp_path) -> None:
    from dreamrelation.flows.analysis import qkv_analysis, summary_markdown

    model = BaseModelConfig(profile="demo", device="cpu", dtype="float32", models_cache=str(tmp_path / "models"))
    summary = qkv_analysis(rank=4, out_dir=tmp_path / "qkv", model=model)
    data = json.loads(Path(summary["json"]).read_text())
    assert data["rank"] == 4 and summary["num_blocks"] == data["num_blocks"] == 2
    assert Path(summary["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(summary["mean"]) == {"vision", "text"}
    assert all(0.0 <= v <= 1.0 for means in summary["mean"].values() for v in means.values())
    assert "| vision |" in summary_markdown(summary)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        qkv_analysis(model_dir=tmp_path / "missing", out_dir=tmp_path / "qkv")
