"""The CLI's temporary Prefect server (and anything else it starts) ends with the CLI, even on SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dreamrelation.flows.server_guard import is_running

SERVER_MARK = "prefect.server.api.server:create_app"


def _children(pid: int) -> dict[int, str]:
    """Live child processes of `pid` and their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):  # gone meanwhile
            continue
    return found


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def _kill_and_check_gone(parent: subprocess.Popen, child: int) -> bool:
    """SIGKILL the parent; True if `child` stops within 8 s (it is killed here otherwise)."""
    try:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        return _wait_for(lambda: not is_running(child), timeout=8)
    finally:
        if is_running(child):
            os.kill(child, signal.SIGKILL)


pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="the guard needs /proc (Linux)")


def test_a_killed_process_takes_what_it_started_with_it():
    script = (
        "import subprocess, sys, time\n"
        "from dreamrelation.flows.server_guard import guard_children\n"
        "guard_children()\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert is_running(child)
    assert _kill_and_check_gone(parent, child), "the child outlived its killed parent"


@pytest.mark.slow
def test_killed_cli_leaves_no_temporary_prefect_server(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    cli = subprocess.Popen(
        [sys.executable, "-m", "dreamrelation.flows.cli", "select", "-r", "A058"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    servers: list[int] = []

    def server_started() -> bool:
        servers.extend(pid for pid, cmd in _children(cli.pid).items() if SERVER_MARK in cmd)
        return bool(servers) or cli.poll() is not None

    try:
        assert _wait_for(server_started, timeout=30) and servers, "the CLI started no temporary Prefect server"
    finally:
        if not servers:
            cli.kill()
    assert _kill_and_check_gone(cli, servers[0]), "the temporary Prefect server outlived the killed CLI"
