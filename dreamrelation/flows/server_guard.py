"""Nothing the CLI starts outlives it, not even when the CLI is killed with SIGKILL.

Without PREFECT_API_URL, Prefect runs flows against a temporary API server that it starts as a
child process of the CLI and stops from an `atexit` handler. A CLI killed with SIGKILL runs no
exit handler, so that server would be left running as an orphan.

`guard_children()` prevents this. It puts a token unique to this CLI process in the
environment, which every process the CLI starts from then on inherits unless it is given an
environment of its own (Prefect passes the environment on to its server), and starts a small watchdog in its own session. The watchdog
reads a pipe whose write end only the CLI holds: however the CLI ends, the kernel closes that
pipe, the read returns, and the watchdog terminates every process whose environment carries the
token (SIGTERM, then SIGKILL after a grace period). It finds them in /proc, so the guard works
on Linux and does nothing elsewhere. (A process the CLI forks without exec also holds the pipe;
the watchdog then acts once that one ends too.)

The CLI runs this file as a script for the watchdog: it imports only the standard library.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

TOKEN_VAR = "DREAMRELATION_CLI_GUARD"
GRACE_SECONDS = 3.0
_PROC = Path("/proc")
_watchdog: subprocess.Popen[bytes] | None = None


def guard_children() -> subprocess.Popen[bytes] | None:
    """Start this process's watchdog (once); None where /proc is missing (not Linux)."""
    global _watchdog
    if _watchdog is not None and _watchdog.poll() is None:
        return _watchdog
    if not (_PROC / "self" / "environ").exists():
        return None
    token = uuid.uuid4().hex
    env = {key: value for key, value in os.environ.items() if key != TOKEN_VAR}
    _watchdog = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), token],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # Ctrl-C or a closed terminal must not stop it before it cleans up
    )
    os.environ[TOKEN_VAR] = token  # only after the watchdog started: it must not carry the token
    return _watchdog


def tagged_processes(token: str) -> list[int]:
    """Pids of the live processes whose environment carries `TOKEN_VAR=token`."""
    needle = f"{TOKEN_VAR}={token}".encode()
    pids = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if needle in environ.split(b"\0") and is_running(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def is_running(pid: int) -> bool:
    """True while the process exists and is not a zombie (dead, waiting to be reaped)."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def terminate(pids: list[int], grace_seconds: float = GRACE_SECONDS) -> None:
    """SIGTERM the processes, then SIGKILL those still running after the grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_seconds
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if is_running(pid)]
            time.sleep(0.05)


def _watch(token: str) -> None:
    """Wait until the CLI is gone (its end of stdin closes), then end what it started."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    sys.stdin.buffer.read()
    terminate(tagged_processes(token))


if __name__ == "__main__":
    _watch(sys.argv[1])
