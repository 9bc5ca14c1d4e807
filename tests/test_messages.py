"""Issue 24.6: messages a new user met that did not say what to do, each one line, exit code 2."""

from __future__ import annotations

from pathlib import Path

from prefect.settings import PREFECT_API_URL, temporary_settings
from typer.testing import CliRunner

# Prefect binds its console handler to sys.stderr when flows are first imported: import them
# here, not inside CliRunner's temporary streams.
import dreamrelation.flows.pipeline  # noqa: F401
from dreamrelation.configbase import unknown_key_message
from dreamrelation.flows.cli import app


def _error(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def test_run_all_points_to_fan_out_and_demo():
    line = _error(["run", "-r", "all"])
    assert "run takes one relation" in line and "dreamrelation fan-out --relations all" in line


def test_bogus_stop_after_or_stage_is_refused_before_the_root_is_made(tmp_path):
    root = tmp_path / "artifacts"
    line = _error(["run", "-r", "A058", "--stop-after", "bogus", "-s", f"root={root}"])
    assert line.startswith("error: --stop-after 'bogus' is not a stage; stages: select_clips, write_captions")
    assert "--stage 'masks' is not a stage" in _error(["run", "-r", "A058", "--stage", "masks", "-s", f"root={root}"])
    assert not root.exists()


def test_lora_folder_without_the_file_says_what_to_give(tmp_path):
    line = _error(["sample", "--lora", str(tmp_path), "--out", str(tmp_path / "x.mp4")])
    assert line == (
        f"error: --lora {tmp_path} is a folder without relation_lora.safetensors: give the .safetensors file, "
        "or a training run folder (relations/<id>/runs/train-<fp>)"
    )
    assert not (tmp_path / "x.mp4").exists()


def test_typo_with_a_suffix_suggests_the_key_it_starts_with():
    assert unknown_key_message("lr_typo", ["lr", "lr_warmup_steps", "steps"]) == "unknown key 'lr_typo'; did you mean 'lr'?"
    assert unknown_key_message("zzz", ["lr", "steps"]) == "unknown key 'zzz'; valid keys: lr, steps"
    assert "train: unknown key 'lr_typo'; did you mean 'lr'?" in _error(["run", "-r", "A058", "-s", "train.lr_typo=1"])


def test_fan_out_without_a_server_or_deployment_says_how_to_make_them(prefect_harness):
    line = _error(["fan-out", "--relations", "A058"])
    assert "deployment 'relation-pipeline/relation-pipeline' is not on the Prefect API at http" in line
    assert "prefect deploy --all" in line
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        line = _error(["fan-out", "--relations", "A058"])
    assert "fan-out starts runs of deployments on a Prefect server" in line and "PREFECT_API_URL" in line


def test_sample_with_a_folder_preset_needs_no_dataset(tmp_path, monkeypatch):
    """`sample` reads no dataset: a preset whose dataset folder is absent must not stop it."""
    monkeypatch.chdir(tmp_path)  # the own-folder preset's relative dataset paths do not exist here
    lora = tmp_path / "missing.safetensors"
    line = _error(["sample", "-c", "own-folder", "--lora", str(lora), "--out", str(tmp_path / "x.mp4")])
    assert line == f"error: LoRA file {lora} does not exist"
    assert not Path(tmp_path / "x.mp4").exists()


def _folder_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "my_relations"
    (root / "Fist Bump").mkdir(parents=True)  # created, videos not yet copied in
    (root / "Hug").mkdir()
    (root / "Hug" / "clip01.mp4").write_bytes(b"not decoded by the listing")
    (root / "Hug" / "clip01.txt").write_text("  \n")
    return root


def test_empty_relation_folder_is_named_as_empty_not_unknown(tmp_path):
    root = _folder_dataset(tmp_path)
    args = ["-s", "select.source=folder", "-s", f"select.dataset_root={root}", "-s", "synthetic=null",
            "-s", "relations_file=null", "-s", "masks.backend=provided", "-s", f"root={tmp_path / 'artifacts'}"]
    line = _error(["select", "-r", "Fist Bump", *args])
    assert line.startswith(f"error: relation 'Fist Bump': the folder 'Fist Bump' under dataset root {root} is not used: "
                           "it holds no video (.avi ")
    assert "unknown relation" not in line
    assert "unknown relation 'Wave'" in _error(["select", "-r", "Wave", *args])  # a folder that does not exist


def test_empty_caption_sidecar_is_called_empty_not_missing(tmp_path):
    from dreamrelation.data.folder import list_folder_dataset
    from dreamrelation.data.select import folder_clip_verdict
    from dreamrelation.data.video import VideoConfig

    relation = list_folder_dataset(str(_folder_dataset(tmp_path))).relations["hug"]
    record, reason = folder_clip_verdict(relation.clips[0], relation, "", {}, VideoConfig())
    assert record is None
    assert reason == "no caption: clip01.txt beside the video is empty and no caption template for relation 'hug' in relations_file"
