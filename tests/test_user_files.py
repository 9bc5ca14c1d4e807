"""Issue 9, end to end through the `dreamrelation` command: a user's files are never touched.

Each case puts a sentinel file in a folder the user named, runs the command a user would
plausibly type, and checks: exit code 2, one `error:` line naming the folder, no traceback,
and the folder byte for byte as it was.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

# Prefect binds its console handler to sys.stderr when flows are first imported: import them
# here, not inside CliRunner's temporary streams.
import dreamrelation.flows.pipeline  # noqa: F401
from dreamrelation.flows.cli import app

SENTINEL = b"a user's own file: must survive byte for byte\n"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _invoke(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    output = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return output


def test_incomplete_model_dir_is_an_error_and_left_untouched(tmp_path: Path, tiny_dir: Path) -> None:
    folder = tmp_path / "mochi-1-preview"
    shutil.copytree(tiny_dir, folder)
    shutil.rmtree(folder / "vae")  # a half-finished download
    (folder / "NOTES.txt").write_bytes(SENTINEL)
    before = _snapshot(folder)
    out = _invoke(["sample", "--base-only", "--out", str(tmp_path / "s.mp4"), "-s", f"model.model_dir={folder}",
                   "-s", f"model.models_cache={tmp_path / 'cache'}"])
    assert f"error: Mochi-1 model folder {folder} is incomplete; missing: vae/config.json" in out
    assert _snapshot(folder) == before
    assert not (tmp_path / "s.mp4").exists()


def test_synthetic_generator_refuses_a_real_dataset_folder(prefect_harness, tmp_path: Path) -> None:
    real = tmp_path / "nturgbd"
    (real / "nturgb+d_rgb").mkdir(parents=True)
    (real / "nturgb+d_rgb" / "S001C001P001R001A058_rgb.avi").write_bytes(SENTINEL)
    before = _snapshot(real)
    root = tmp_path / "artifacts"
    out = _invoke(["select", "-r", "A058", "-s", f"select.dataset_root={real}", "-s", f"root={root}"])
    assert f"error: dataset root {real} holds files the synthetic generator did not write" in out
    assert _snapshot(real) == before

    mistyped = tmp_path / "nturgdb"
    out = _invoke(["select", "-r", "A058", "-s", f"select.dataset_root={mistyped}", "-s", f"root={root}"])
    assert f"error: dataset root {mistyped} does not exist" in out
    assert not mistyped.exists()


@pytest.mark.parametrize("command", [["select", "-r", "A058"], ["run", "-r", "A058", "--stop-after", "select_clips"]])
def test_unwritable_root_fails_before_any_work(prefect_harness, tmp_path: Path, command: list[str]) -> None:
    root = tmp_path / "root-is-a-file"
    root.write_bytes(SENTINEL)
    dataset = tmp_path / "ntu"
    dataset.mkdir()
    out = _invoke([*command, "-s", f"root={root}", "-s", f"select.dataset_root={dataset}"])
    assert f"error: artifact root {root} is not writable: it is a file, not a folder" in out
    assert root.read_bytes() == SENTINEL
    assert list(dataset.iterdir()) == []  # the synthetic dataset was not even started
