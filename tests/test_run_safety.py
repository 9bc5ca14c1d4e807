"""Issue 24: two runs of one artifact, Ctrl-C and a full disk, through the `dreamrelation` command.

- 24.1: a second run of an artifact that is being built is refused, naming the run that holds it,
  and nothing of the artifact is written; what interrupted writers left is removed by the next build;
- 24.2: Ctrl-C (SIGINT to the whole process group, as a terminal sends it) ends the command within
  seconds with exit code 130 and one line, and the rerun resumes;
- 24.4: a full disk is one `error:` line naming the stage and the path, exit code 1.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

# Prefect binds its console handler to sys.stderr when flows are first imported: import them
# here, not inside CliRunner's temporary streams.
import dreamrelation.flows.pipeline  # noqa: F401
from dreamrelation.config import load_config
from dreamrelation.data.store import ArtifactStore
from dreamrelation.flows.cli import INTERRUPTED_LINE, app
from dreamrelation.plan import plan_relation


def _select_args(synthetic_root: Path, root: Path) -> list[str]:
    return ["-s", f"select.dataset_root={synthetic_root}", "-s", "synthetic=null", "-s", f"root={root}"]


def _select_key(synthetic_root: Path, root: Path) -> str:
    overrides = [a for a in _select_args(synthetic_root, root) if a != "-s"]
    return plan_relation("A058", load_config(None, overrides))["select_clips"].key


def test_second_run_of_an_artifact_is_refused_naming_the_first(prefect_harness, synthetic_root, tmp_path):
    root = tmp_path / "artifacts"
    key = _select_key(synthetic_root, root)
    store = ArtifactStore(root)
    with store.lock(key, holder="a058-select-clips-first"):
        result = CliRunner().invoke(app, ["select", "-r", "A058", *_select_args(synthetic_root, root)])
    output = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert f"error: artifact {root / key} is being built by run 'a058-select-clips-first' (pid {os.getpid()} on " in output
    assert not (root / key).exists() and not store.is_complete(key)
    assert not list((root / key).parent.glob("*.partial-*"))


def test_next_build_removes_what_an_interrupted_writer_left(prefect_harness, synthetic_root, tmp_path):
    root = tmp_path / "artifacts"
    key = _select_key(synthetic_root, root)
    stale = root / f"{key}.partial-0badc0de"
    stale.mkdir(parents=True)
    (stale / "half.json").write_text("{")
    result = CliRunner().invoke(app, ["select", "-r", "A058", *_select_args(synthetic_root, root)])
    assert result.exit_code == 0, result.output
    assert ArtifactStore(root).is_complete(key)
    assert sorted(p.name for p in (root / key).parent.iterdir()) == [Path(key).name, Path(key).name + ".complete.json"]


def test_full_disk_is_one_line_naming_stage_and_path(prefect_harness, synthetic_root, tmp_path, monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/artifacts/listing.json.gz")

    monkeypatch.setattr("dreamrelation.tasks.selection.select_clips", no_space)
    root = tmp_path / "artifacts"
    result = CliRunner().invoke(app, ["select", "-r", "A058", *_select_args(synthetic_root, root)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: select_clips [A058] could not write /data/artifacts/listing.json.gz: No space left on device; "
        "free space there and run again (finished stages are reused)"
    ]
    key = _select_key(synthetic_root, root)
    assert not ArtifactStore(root).is_complete(key) and not list((root / key).parent.glob("*.partial-*"))


def _start_in_own_group(args: list[str], stderr: Path) -> subprocess.Popen[bytes]:
    """The CLI as a terminal starts it: its own process group, SIGINT at its default, no API server."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    launcher = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
    command = [sys.executable, "-c", launcher, str(Path(sys.executable).with_name("dreamrelation")), *args]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr.open("wb"), env=env, start_new_session=True)


@pytest.mark.slow
def test_ctrl_c_ends_at_once_with_one_line_and_the_rerun_resumes(synthetic_root, tmp_path):
    root = tmp_path / "artifacts"
    args = ["run", "-r", "A058", "--stop-after", "write_captions", *_select_args(synthetic_root, root)]
    stderr = tmp_path / "stderr.txt"
    cli = _start_in_own_group(args, stderr)
    try:
        deadline = time.monotonic() + 240
        # a stage has begun building: its lock, or its "building" line (a lock can live 10 ms,
        # too short to poll for reliably; the run goes on ~2.5 s after the line)
        while "select_clips [A058]: building" not in stderr.read_text() and not list(root.rglob("*.lock")):
            assert cli.poll() is None, stderr.read_text()
            assert time.monotonic() < deadline, "no stage started within 240 s"
            time.sleep(0.02)
        os.killpg(cli.pid, signal.SIGINT)
        sent = time.monotonic()
        assert cli.wait(timeout=30) == 130
        assert time.monotonic() - sent < 10
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
    text = stderr.read_text()
    assert text.rstrip().endswith(INTERRUPTED_LINE)
    assert "Traceback" not in text and "Aborted" not in text
    assert text.count("Starting temporary server") == 1  # Prefect used the server the CLI started

    rerun = subprocess.run(
        [str(Path(sys.executable).with_name("dreamrelation")), *args], capture_output=True, text=True, timeout=400,
        env={k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"},
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert not list(root.rglob("*.partial-*")) and not list(root.rglob("*.lock"))
    overrides = [a for a in _select_args(synthetic_root, root) if a != "-s"]
    plan = plan_relation("A058", load_config(None, overrides))
    store = ArtifactStore(root)
    assert all(store.is_complete(plan[stage].key) for stage in ("select_clips", "write_captions"))
