"""Processes crossfeed starts die with their parent, on any signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from crossfeed.ops.bench.report import free_port

SLEEPER = "import time; time.sleep(120)"
# A worker stand-in that does what `crossfeed worker` does first: die_with_parent().
WATCHED_SLEEPER = (
    "from crossfeed.ops.run.processes import die_with_parent; die_with_parent(); " + SLEEPER
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent or init) is gone for our purpose.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def _parent(script: str, tmp_path: Path) -> tuple[subprocess.Popen, int]:
    """Start ``script`` (which prints its worker's pid, then serves) and read that pid."""
    path = tmp_path / "parent.py"
    path.write_text(textwrap.dedent(script))
    proc = subprocess.Popen(
        [sys.executable, str(path)], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip().isdigit(), f"parent printed {line!r}"
    return proc, int(line)


@pytest.mark.parametrize("uvicorn_in_main_thread", [True, False])
def test_sigterm_to_serve_stops_its_workers(tmp_path: Path, uvicorn_in_main_thread: bool) -> None:
    """`kill <pid of crossfeed serve>` used to leave the workers running: uvicorn re-raises
    SIGTERM after its shutdown, and the default action ended serve before its cleanup."""
    port = free_port()
    run = (
        "server.run()"
        if uvicorn_in_main_thread
        else "threading.Thread(target=server.run, daemon=True).start(); time.sleep(120)"
    )
    script = f"""
        import sys, threading, time
        import uvicorn
        from crossfeed.ops.run.processes import signals_exit, worker_processes

        async def app(scope, receive, send):
            pass

        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port={port},
                                               log_level="error", lifespan="off"))
        with signals_exit(), worker_processes(1, argv=(sys.executable, "-c", {SLEEPER!r})) as ps:
            print(ps[0].pid, flush=True)
            {run}
    """
    parent, worker = _parent(script, tmp_path)
    try:
        time.sleep(1.5)  # let uvicorn install its handlers
        assert _alive(worker)
        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=30)
        assert _wait_gone(worker), "the worker outlived serve"
    finally:
        for pid in (parent.pid, worker):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_worker_whose_parent_was_killed_exits(tmp_path: Path) -> None:
    """SIGKILL leaves the parent no cleanup: the worker must notice and exit by itself."""
    script = f"""
        import sys, time
        from crossfeed.ops.run.processes import worker_processes

        with worker_processes(1, argv=(sys.executable, "-c", {WATCHED_SLEEPER!r})) as ps:
            print(ps[0].pid, flush=True)
            time.sleep(120)
    """
    parent, worker = _parent(script, tmp_path)
    try:
        time.sleep(1.0)  # the worker has called die_with_parent()
        assert _alive(worker)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        assert _wait_gone(worker), "the worker outlived its SIGKILLed parent"
    finally:
        for pid in (parent.pid, worker):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_die_with_parent_does_nothing_for_a_worker_started_by_hand(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from crossfeed.ops.run import processes

    monkeypatch.delenv(processes.PARENT_PID_ENV, raising=False)
    before = {t.name for t in __import__("threading").enumerate()}
    processes.die_with_parent()
    after = {t.name for t in __import__("threading").enumerate()}
    assert "crossfeed-parent-watch" not in after - before
