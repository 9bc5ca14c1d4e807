"""The study, round two (issue 21 §3-§4) at micro sizes through the real code paths: the v2 base and
its gates, the leak probe's stop path, a micro study with intervals, and the bootstrap by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dreamrelation.config import load_toy_config
from dreamrelation.data.world import ALL_RELATIONS, world_v2
from dreamrelation.evaluation.bootstrap import paired_difference, wilson_interval
from dreamrelation.evaluation.config import StudyV2Config
from dreamrelation.evaluation.toy import AttributeVideo, attribute_rates, attribute_report, unnamed_share
from dreamrelation.flows.server_guard import is_running
from dreamrelation.model.config import PretrainConfig
from dreamrelation.stages.pretrain import GATES_FILE, GATES_V2, MODEL_DIR, pretrain_base
from dreamrelation.stages.study_v2 import (PROBE_JSON, REPORT_MD, RESULTS_JSON, exemplar_specs, matched_steps,
                                           prompt_sets, relation_learnt, run_jobs, run_study_v2, verdicts)

MICRO_V2 = PretrainConfig(
    world=world_v2(),
    held_out_relations=["push", "loom"],
    vae={"steps": 2, "full_frame_steps": 1, "batch_size": 1, "stats_clips": 2, "checkpoint_every": 1},
    dit={"clips": 4, "steps": 2, "batch_size": 2, "checkpoint_every": 1, "warmup_steps": 0},
    gates={"reconstruction_clips": 2, "prompts": 2, "sample": {"steps": 2, "frames": 25, "height": 64, "width": 96}},
)


def micro_study(**update) -> StudyV2Config:
    cfg = StudyV2Config(
        relations=["loom"], methods=["dreamrelation", "direct_lora", "base"], seeds=[0, 1], exemplars=2, prompts=2,
        checkpoint_prompts=1, eval_steps=[1, 2], train={"steps": 2, "min_clips": 1, "checkpoint_every": 1,
                                                        "warmup_steps": 0, "gradient_checkpointing": False,
                                                        "sample_every": 0, "lora": {"rank": 2, "alpha": 2}},
        sample={"steps": 2, "frames": 25, "height": 64, "width": 96}, resamples=100, strip_prompts=1,
        probe_margin=-1.0, workers=1, fit_prompts=1,
    )
    return cfg.model_copy(update=update)


@pytest.fixture(scope="module")
def base_v2(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("toy-v2") / "base"
    pretrain_base(MICRO_V2, folder)
    return folder


def test_v2_base_has_its_words_and_its_gates_and_never_sees_the_targets(base_v2: Path) -> None:
    gates = json.loads((base_v2 / GATES_FILE).read_text())
    assert set(gates["gates"]) == set(GATES_V2)
    assert gates["gates"]["unnamed scene: largest class share, 95 % low"]["direction"] == "<="
    assert all(isinstance(g["passed"], bool) for g in gates["gates"].values())
    assert {"scene_accuracy", "body_accuracy", "relation_accuracy", "psnr_db"} <= set(gates["measured"]["reconstruction"])
    data = torch.load(base_v2 / "work" / "dit_data.pt", weights_only=False)
    for relation in MICRO_V2.held_out_relations:
        assert not [c for c in data["captions"] if ALL_RELATIONS[relation].verb in c]
    from diffusers import MochiPipeline

    pipe = MochiPipeline.from_pretrained(base_v2 / MODEL_DIR, local_files_only=True)
    pieces = pipe.tokenizer.tokenize("A big dark tall figure is looming over a small light figure on a checkered background.")
    assert {"▁looming", "▁checkered", "▁figure", "▁big"} <= set(pieces)


def test_attribute_rates_by_hand() -> None:
    exemplar = {"scene": "checkerboard", "body": "tall", "scale": "big"}
    asked = {"scene": "stripes", "body": "wide", "scale": "small"}
    leaked = AttributeVideo("p", "loom", "loom", asked, {"scene": "checkerboard", "body": "wide", "scale": "big"}, [])
    rates = attribute_rates(leaked, exemplar)
    assert rates == {"relation_accuracy": 1.0, "scene_follow": 0.0, "body_follow": 1.0, "scale_follow": 0.0,
                     "scene_leak": 1.0, "body_leak": 0.0, "scale_leak": 1.0, "joint": 0.0}
    unnamed = AttributeVideo("p", "loom", "push", {"scene": None, "body": "wide", "scale": None},
                             {"scene": "plain", "body": "wide", "scale": "small"}, [])
    rates = attribute_rates(unnamed, exemplar)
    assert rates["scene_follow"] is None and rates["scene_leak"] == 0.0 and rates["joint"] == 0.0
    report = attribute_report([leaked, unnamed, unnamed])
    assert report["relation_accuracy"] == pytest.approx(1 / 3) and report["scene_accuracy"] == 0.0
    assert report["scene_unnamed_top_share"] == 1.0 and report["body_unnamed_top_share"] is None


def test_unnamed_share_leaves_abstentions_out_and_bounds_the_share_by_hand() -> None:
    # 8 of 10 read videos are "small"; 2 more abstained. Wilson 95 % for 8/10, by hand:
    # (0.8 + 0.19208 -/+ 1.96 * sqrt(0.016 + 0.009604)) / 1.38416 = 0.4902 .. 0.9433
    seen = ["small"] * 8 + ["big"] * 2 + [None] * 2
    share = unnamed_share("scale", seen)
    assert share["scale_unnamed_top_share"] == pytest.approx(0.8)
    assert share["scale_unnamed_read"] == 10 and share["scale_unnamed_abstained"] == pytest.approx(2 / 12)
    assert share["scale_unnamed_top_share_low"] == pytest.approx(0.4902, abs=1e-4)
    assert share["scale_unnamed_top_share_high"] == pytest.approx(0.9433, abs=1e-4)
    # abstentions alone are not a class taking over: nothing read, nothing to gate
    assert unnamed_share("body", [None, None])["body_unnamed_top_share"] is None
    # an unbiased two-class prior (9 of 18) passes; a takeover (17 of 18) does not
    assert unnamed_share("scale", ["small"] * 9 + ["big"] * 9)["scale_unnamed_top_share_low"] < 0.5
    assert unnamed_share("scale", ["small"] * 17 + ["big"])["scale_unnamed_top_share_low"] > 0.5


def test_wilson_interval_rejects_bad_counts() -> None:
    with pytest.raises(ValueError, match="3 of 2"):
        wilson_interval(3, 2)
    assert wilson_interval(0, 5)[0] == pytest.approx(0.0, abs=1e-12)


def test_paired_bootstrap_by_hand() -> None:
    ones, zeros = np.ones((3, 4)), np.zeros((3, 4))
    same = paired_difference(ones, zeros, resamples=200)
    assert (same.mean, same.low, same.high, same.units) == (1.0, 1.0, 1.0, 12) and same.excludes_zero
    mixed = np.array([[1.0, 0.0], [0.0, 1.0]])
    half = paired_difference(mixed, np.zeros((2, 2)), resamples=500, seed=1)
    assert half.mean == 0.5 and 0.0 <= half.low < 0.5 < half.high <= 1.0 and not half.excludes_zero
    left_out = paired_difference(np.array([[1.0, np.nan]]), np.array([[0.0, 0.0]]), resamples=100)
    assert left_out.units == 1 and left_out.mean == 1.0
    assert paired_difference(mixed, np.zeros((2, 2)), resamples=300, seed=4) == \
        paired_difference(mixed, np.zeros((2, 2)), resamples=300, seed=4)
    with pytest.raises(ValueError, match="one shape"):
        paired_difference(ones, np.zeros((2, 4)))


def test_prompt_sets_ask_for_other_looks_than_the_exemplars() -> None:
    cfg = StudyV2Config()
    sets = prompt_sets(cfg, world_v2(), "loom")
    assert len(sets["P1"]) == len(sets["P2"]) == cfg.prompts
    for spec in sets["P1"]:
        assert spec.scene != "checkerboard" and spec.body != "tall" and spec.scale != "big"
        assert spec.named == ("scene", "body", "scale")
    assert all(s.named == ("body",) and s.body != "tall" for s in sets["P2"])
    assert "P0" not in sets  # the fit set is off unless asked for
    fit = prompt_sets(cfg.model_copy(update={"fit_prompts": 3}), world_v2(), "loom")["P0"]
    exemplars = exemplar_specs(cfg, world_v2(), "loom")
    assert len(fit) == 3 and all((s.scene, s.body, s.scale, s.named) == ("checkerboard", "tall", "big", ("body",))
                                 for s in fit)
    assert not {s.seed for s in fit} & {s.seed for s in exemplars}  # new draws, not the exemplars


def test_leak_probe_stops_the_study_before_any_comparison(base_v2: Path, tmp_path: Path) -> None:
    cfg = micro_study(probe_margin=2.0)  # no scene leak can exceed the base's by 2
    result = run_study_v2(cfg, base_v2 / MODEL_DIR, MICRO_V2.world, tmp_path)
    assert result["stopped"] and not result["probe"]["passed"]
    assert "stopped at the leak probe" in (tmp_path / REPORT_MD).read_text()
    runs = sorted(p.relative_to(tmp_path / "runs").as_posix() for p in (tmp_path / "runs").glob("*/*/*"))
    assert runs == ["loom/base/seed0", "loom/direct_lora/seed0"]  # nothing else was trained


def test_micro_study_judges_every_step_and_reports_intervals(base_v2: Path, tmp_path: Path) -> None:
    cfg = micro_study()
    result = run_study_v2(cfg, base_v2 / MODEL_DIR, MICRO_V2.world, tmp_path)
    assert not result["stopped"] and json.loads((tmp_path / PROBE_JSON).read_text())["passed"]
    run = tmp_path / "runs" / "loom" / "dreamrelation" / "seed1"
    first = json.loads((run / "eval-00001.json").read_text())
    last = json.loads((run / "eval-00002.json").read_text())
    assert len(first["sets"]["P1"]) == 1 and "P2" not in first["sets"]  # earlier steps: checkpoint_prompts of P1
    assert len(first["sets"]["P0"]) == len(last["sets"]["P0"]) == 1  # and all of P0, at every step
    assert len(last["sets"]["P1"]) == len(last["sets"]["P2"]) == 2
    assert set(result["curves"]["dreamrelation"]) == {"1", "2"} and set(result["curves"]["base"]) == {"0"}
    assert all("P0_relation_accuracy" in cell for cell in result["curves"]["dreamrelation"].values())
    pairs = {(c["a"], c["b"], c["metric"]) for c in result["comparisons"]}
    assert ("dreamrelation", "direct_lora", "scene_leak") in pairs and ("direct_lora", "base", "joint") in pairs
    assert ("dreamrelation", "base", "P0_relation_accuracy") in pairs  # fit_prompts > 0: P0 is compared too
    assert ("direct_lora", "base", "P2_relation_accuracy") in pairs and ("direct_lora", "base", "P2_scene_leak") in pairs
    for c in result["comparisons"]:
        assert c["low"] <= c["mean"] <= c["high"] and c["units"] > 0
    assert set(result["memorisation"]) == set(cfg.methods)
    assert "RCL improves relation dynamics" in result["verdicts"]  # no_rcl not run here: "not measured"
    assert result["verdicts"]["RCL improves relation dynamics"] == "not measured"
    report = (tmp_path / REPORT_MD).read_text()
    assert "paired bootstrap 95 % CI" in report and "dreamrelation - direct_lora" in report
    assert f"Relation learnt above the base (context, not a verdict rule): {relation_learnt(result['comparisons'])}." in report
    assert (tmp_path / "front.png").is_file() and (tmp_path / RESULTS_JSON).is_file()
    # resumable: a second call trains nothing and gives the same result
    again = run_study_v2(cfg, base_v2 / MODEL_DIR, MICRO_V2.world, tmp_path)
    assert again["comparisons"] == result["comparisons"]


def test_round_three_judges_p2_at_every_step_and_pairs_matched_checkpoints(base_v2: Path, tmp_path: Path) -> None:
    cfg = micro_study(methods=["dreamrelation", "direct_lora", "no_hmt", "base"], seeds=[0], fit_prompts=0,
                      checkpoint_prompts=2, primary_set="P2", hmt_pairing="matched_accuracy")
    result = run_study_v2(cfg, base_v2 / MODEL_DIR, MICRO_V2.world, tmp_path)
    assert result["probe"]["prompt_set"] == "P2"
    first = json.loads((tmp_path / "runs" / "loom" / "no_hmt" / "seed0" / "eval-00001.json").read_text())
    assert set(first["sets"]) == {"P2"} and len(first["sets"]["P2"]) == 2  # the primary set, at every step
    cells = result["curves"]["dreamrelation"]
    assert "P2_scene_leak" in cells["1"] and "scene_leak" not in cells["1"] and "scene_leak" in cells["2"]
    matched = [c for c in result["comparisons"] if c["metric"].startswith("matched_")]
    assert {(c["b"], c["metric"]) for c in matched} == {
        (b, m) for b in ("direct_lora", "no_hmt") for m in ("matched_P2_relation_accuracy", "matched_P2_scene_leak")}
    for c in matched:
        assert tuple(map(str, c["steps"])) == matched_steps(result["curves"], "dreamrelation", c["b"],
                                                            "P2_relation_accuracy")
    assert result["verdicts"] == verdicts(result["comparisons"], "P2", "matched_accuracy")
    assert result["verdicts"]["HMT reduces leakage at matched relation accuracy"] != "not measured"
    report = (tmp_path / REPORT_MD).read_text()
    assert "At matched relation accuracy (P2" in report and "Leak probe (P2)" in report


def test_matched_steps_pick_the_closest_accuracies_and_prefer_later_ties() -> None:
    def curve(**accuracy):
        return {step.removeprefix("s"): {"acc": {"mean": value}} for step, value in accuracy.items()}

    table = {"a": curve(s100=0.2, s300=0.4, s600=0.5), "b": curve(s100=0.45, s300=0.6, s600=0.7)}
    # |0.4-0.45| = |0.5-0.45| = 0.05 (a tie): the later pair, a 600 with b 100
    assert matched_steps(table, "a", "b", "acc") == ("600", "100")
    table["b"] = curve(s100=0.39, s300=0.6)
    assert matched_steps(table, "a", "b", "acc") == ("300", "100")


def test_study_v2_config_is_checked() -> None:
    with pytest.raises(ValueError, match="eval_steps"):
        StudyV2Config(eval_steps=[100, 300])
    with pytest.raises(ValueError, match="exemplar_scene"):
        StudyV2Config(exemplar_scene="forest")
    with pytest.raises(ValueError, match=r"checkpoint_prompts \(10\) to prompts \(20\)"):
        StudyV2Config(hmt_pairing="matched_accuracy")
    with pytest.raises(ValueError, match="primary_set"):
        StudyV2Config(primary_set="P3")
    with pytest.raises(ValueError, match="study_v2.relations"):
        load_toy_config("configs/toy/world-v2.yaml", ["study_v2.relations=[orbit]"])
    quick = load_toy_config("configs/toy/world-v2.yaml").quick().study_v2
    assert quick.seeds == [0, 1] and quick.methods == ["dreamrelation", "direct_lora", "base"]


def test_verdict_rules_by_hand() -> None:
    def c(a, b, metric, low, high):
        return {"a": a, "b": b, "metric": metric, "mean": (low + high) / 2, "low": low, "high": high, "units": 10}

    claims = ["HMT reduces leakage at matched relation accuracy", "RCL improves relation dynamics",
              "the triplet beats one LoRA"]
    better = [c("dreamrelation", b, "scene_leak", -0.5, -0.1) for b in ("direct_lora", "no_hmt")]
    matched = [c("dreamrelation", b, "relation_accuracy", -0.1, 0.1) for b in ("direct_lora", "no_hmt")]
    found = verdicts(better + matched + [c("dreamrelation", "no_rcl", "relation_accuracy", 0.05, 0.2),
                                         c("dreamrelation", "direct_lora", "joint", -0.3, -0.1)])
    assert [found[k] for k in claims] == ["supported", "supported", "refuted"]
    worse_accuracy = [c("dreamrelation", b, "relation_accuracy", -0.4, -0.2) for b in ("direct_lora", "no_hmt")]
    assert verdicts(better + worse_accuracy)[claims[0]].startswith("not supported")
    within = [c("dreamrelation", "direct_lora", "scene_leak", -0.2, 0.1), better[1]]
    assert verdicts(within + matched)[claims[0]].startswith("refuted")
    assert verdicts([])[claims[1]] == "not measured"
    # round three: P2 metrics, and the HMT claim read from the matched pairs only
    p2 = [{**x, "metric": "P2_" + x["metric"]} for x in better + matched]
    assert verdicts(p2, "P2")[claims[0]] == "supported"
    assert verdicts(p2, "P2", "matched_accuracy")[claims[0]] == "not measured"
    matched_p2 = [{**x, "metric": "matched_" + x["metric"]} for x in p2]
    assert verdicts(matched_p2 + [{**x, "metric": "P2_" + x["metric"]} for x in worse_accuracy], "P2",
                    "matched_accuracy")[claims[0]] == "supported"
    assert verdicts(p2 + [c("dreamrelation", "direct_lora", "P2_joint", 0.1, 0.3)], "P2")[claims[2]] == "supported"


def test_relation_learnt_reads_the_intervals_against_the_base() -> None:
    def c(a, low, high):
        return {"a": a, "b": "base", "metric": "relation_accuracy", "mean": (low + high) / 2, "low": low, "high": high}

    assert relation_learnt([c("dreamrelation", -0.21, 0.18), c("direct_lora", -0.19, 0.10)]).startswith("no:")
    assert relation_learnt([c("dreamrelation", -0.2, 0.1), c("direct_lora", 0.05, 0.3)]) == \
        "yes (direct_lora above the base beyond the interval)"
    assert relation_learnt([]).startswith("not measured")


def test_cli_study_on_world_v2_runs_the_round_two_stage(prefect_harness, tmp_path: Path) -> None:
    """`dreamrelation study -c micro-v2.yaml`: the v2 base, then the round-two study, as flows."""
    import yaml
    from typer.testing import CliRunner

    import dreamrelation.flows.toy  # noqa: F401  (bind Prefect's console handler outside CliRunner)
    from dreamrelation.flows.cli import app

    micro = {"root": str(tmp_path / "toy"), "pretrain": MICRO_V2.model_dump(mode="json"),
             "study_v2": micro_study(methods=["direct_lora", "base"], seeds=[0]).model_dump(mode="json")}
    (tmp_path / "micro.yaml").write_text(yaml.safe_dump(micro))
    result = CliRunner().invoke(app, ["study", "-c", str(tmp_path / "micro.yaml")])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "toy-world pretrain_base built" in flat and "toy-world study_v2 built" in flat
    report = next((tmp_path / "toy" / "studies").glob("toy-v2-*/study.md")).read_text()
    assert "direct_lora - base" in report and "Leak probe" in report
    assert "RCL improves relation dynamics: not measured" in flat  # the verdicts, printed at the end


def test_run_jobs_keeps_order_and_stops_its_workers_when_the_caller_stops() -> None:
    import multiprocessing
    import operator
    import time

    assert run_jobs(operator.add, [(1, 2), (3, 4), (5, 6)], workers=2) == [3, 7, 11]

    def stop(index: int, _result: object) -> None:
        raise KeyboardInterrupt  # as Ctrl-C, or Prefect's SIGTERM exception, would arrive

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_jobs(time.sleep, [(0,), (300,)], workers=2, on_result=stop)
    # without the termination the pool would wait for the 300-s job; a generous bound, not a speed target
    assert time.monotonic() - start < 120
    # No worker runs on. (multiprocessing may still list one as started: when the pool's manager
    # thread reaps a worker while `run_jobs` joins it, the loser's waitpid fails and its Process
    # object never learns the exit, about 1 run in 4 here. /proc says whether it runs.)
    assert [p.pid for p in multiprocessing.active_children() if is_running(p.pid)] == []
