"""Checks before the first stage (issue 24 §5): every input a run will read, and the left-out clips at the end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dreamrelation.config import PipelineConfig, load_config
from dreamrelation.preflight import InputError, check_inputs, stages_to_run


def _config(tmp_path: Path, *overrides: str) -> PipelineConfig:
    return load_config("demo", [f"root={tmp_path / 'artifacts'}", f"model.models_cache={tmp_path / 'models'}",
                                *overrides])


def test_the_demo_passes_without_building_anything(tmp_path: Path) -> None:
    check_inputs("A058", _config(tmp_path))
    assert not (tmp_path / "models").exists() and not (tmp_path / "artifacts").exists()  # checked, not built


def test_stop_after_limits_the_checks(tmp_path: Path) -> None:
    assert stages_to_run(None)[-1] == "evaluate" and stages_to_run("make_masks")[-1] == "make_masks"
    with pytest.raises(ValueError, match="stop_after='bogus' is not a stage"):
        stages_to_run("bogus")
    config = _config(tmp_path, f"model.model_dir={tmp_path / 'nope'}", f"evaluate.prompts_path={tmp_path / 'p.csv'}")
    check_inputs("A058", config, stop_after="write_captions")  # neither the model nor the prompts are read
    with pytest.raises(InputError, match="model.model_dir"):
        check_inputs("A058", config, stop_after="encode_latents")


def test_a_model_dir_that_is_not_a_complete_model_is_named(tmp_path: Path) -> None:
    partial = tmp_path / "mochi"
    (partial / "transformer").mkdir(parents=True)
    with pytest.raises(InputError, match=rf"^model.model_dir: Mochi-1 model folder {partial} is incomplete; "
                                         r"missing: model_index.json, transformer/config.json"):
        check_inputs("A058", _config(tmp_path, f"model.model_dir={partial}"))
    assert sorted(p.name for p in partial.iterdir()) == ["transformer"]  # read, never built into
    paper = _config(tmp_path, "model.profile=mochi-1")  # no model_dir and nothing in models_cache
    with pytest.raises(InputError, match=r"^model.model_dir: profile 'mochi-1' needs model_dir"):
        check_inputs("A058", paper)
    check_inputs("A058", paper.model_copy(update={"model": paper.model.model_copy(update={"allow_download": True})}),
                  stop_after="encode_latents")  # fetched at run time, as asked


def test_an_incomplete_toy_base_is_rebuilt_not_downloaded(tmp_path: Path) -> None:
    """The world demo's model folder with a part missing: the advice is the toy base's, not a Hub download."""
    base = tmp_path / "toy-base"
    (base / "model" / "vae").mkdir(parents=True)
    (base / "base.json").write_text(json.dumps({"fingerprint": "toy-0"}))
    with pytest.raises(InputError, match=rf"toy base model folder {base / 'model'} is incomplete; missing: "
                                         rf"model_index.json.*`git checkout -- {base}`.*`dreamrelation pretrain "
                                         rf"--export {base}`") as caught:
        check_inputs("A052", load_config("world-demo", [f"root={tmp_path / 'artifacts'}",
                                                        f"model.model_dir={base / 'model'}"]))
    assert "huggingface-cli" not in str(caught.value)
    assert sorted(p.name for p in base.iterdir()) == ["base.json", "model"]


def test_prompts_are_checked_before_any_stage(tmp_path: Path) -> None:
    missing = tmp_path / "prompts.csv"
    with pytest.raises(InputError, match=rf"^evaluate.prompts_path: prompt file {missing} does not exist"):
        check_inputs("A058", _config(tmp_path, f"evaluate.prompts_path={missing}"))
    missing.write_text("relation,prompt\nA055,A bear is hugging a raccoon.\n")
    with pytest.raises(InputError, match=r"^evaluate.prompts_path: no evaluation prompts for relation A058 in "):
        check_inputs("A058", _config(tmp_path, f"evaluate.prompts_path={missing}"))
    check_inputs("A055", _config(tmp_path, f"evaluate.prompts_path={missing}"))
    bad = tmp_path / "prompts.yaml"
    bad.write_text("A058: [unclosed\n")
    with pytest.raises(InputError, match=r"^evaluate.prompts_path: prompt file .* cannot be parsed"):
        check_inputs("A058", _config(tmp_path, f"evaluate.prompts_path={bad}"))


def test_other_evaluation_inputs_are_checked(tmp_path: Path) -> None:
    method = "evaluate.methods=[{name: DreamRelation}, {name: Direct, source: lora_file, lora_path: '%s'}]"
    with pytest.raises(InputError, match=r"^evaluate.methods\[1\].lora_path: method 'Direct': inference LoRA .* "
                                         "does not exist"):
        check_inputs("A058", _config(tmp_path, method % (tmp_path / "runs" / "{relation}")))
    real = load_config("mochi-1", [f"root={tmp_path / 'artifacts'}", "masks.backend=skeleton-box",
                                   f"evaluate.clip.model_dir={tmp_path / 'clip'}"])
    with pytest.raises(InputError, match=rf"^evaluate: clip.model_dir {tmp_path / 'clip'} is not a folder"):
        check_inputs("A058", real.model_copy(update={"model": _config(tmp_path).model}))  # a real run, tiny model
    segmenter = _config(tmp_path, "masks.backend=skeleton-sam2", f"masks.segmenter_dir={tmp_path / 'sam2'}")
    with pytest.raises(InputError, match=rf"^masks.segmenter_dir: {tmp_path / 'sam2'} is not a folder"):
        check_inputs("A058", segmenter, stop_after="make_masks")
    check_inputs("A058", segmenter, stop_after="encode_latents")


def test_input_errors_are_user_errors_of_the_cli() -> None:
    from dreamrelation.flows.cli import USER_ERRORS

    assert issubclass(InputError, USER_ERRORS)


# --------------------------------------------------------------------------- the left-out clips under the final table


def test_the_final_table_names_the_left_out_clips(tmp_path: Path, capsys) -> None:
    from dreamrelation.flows.cli import _report_left_out
    from dreamrelation.tasks.common import StageResult

    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({
        "relation": "A058", "relation_name": "handshaking", "dataset_root": "/ntu", "available": 3, "config": {},
        "clips": [], "dropped": [
            {"clip_id": "S001C001P001R001A058", "reason": "no .skeleton file"},
            {"clip_id": "S002C001P001R001A058", "reason": "usable, not sampled"},
        ],
    }))
    results = [
        StageResult("select_clips", "A058", str(manifest), "f", False, {"selected": 3, "dropped": 2}),
        StageResult("write_captions", "A058", "x", "f", True, {}),
        StageResult("train_relation", "A058", "y", "f", False,
                    {"clips": 2, "left_out": {"S003C001P001R001A058": "masks skipped: subject 2 is missing"}}),
        StageResult("select_clips", "A055", str(manifest), "f", True, {"selected": 3, "dropped": 0}),
    ]
    _report_left_out(results)
    out = capsys.readouterr().out
    assert "A058 select_clips: S001C001P001R001A058: no .skeleton file" in out
    assert "A058 select_clips: 1 more usable clip(s) not sampled" in out
    assert "A058 train_relation: S003C001P001R001A058: masks skipped: subject 2 is missing" in out
    assert "A055" not in out  # nothing left out there
