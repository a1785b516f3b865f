"""Processes a command starts: stream workers in child processes, the API in this one."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from crossfeed.core.settings import Settings, StreamSettings
from crossfeed.exceptions import ConfigError

PARENT_PID_ENV = "CROSSFEED_PARENT_PID"
METRICS_PORT_ENV = str(StreamSettings.model_fields["metrics_port"].alias)
WORKER_ARGV = (sys.executable, "-m", "crossfeed.ops.cli", "worker")
_PR_SET_PDEATHSIG = 1


@contextlib.contextmanager
def worker_processes(
    count: int, env: dict[str, str] | None = None, argv: tuple[str, ...] = WORKER_ARGV
) -> Iterator[list[subprocess.Popen]]:
    """Start ``count`` worker processes; stop them (SIGTERM, then SIGKILL) on exit.

    Each child learns this process' pid (``CROSSFEED_PARENT_PID``) and exits by itself
    if this process dies without stopping it (see :func:`die_with_parent`), so even a
    SIGKILL of the parent leaves no orphan in the consumer group. With a worker metrics
    port P configured (``CROSSFEED_WORKER_METRICS_PORT``, from ``env`` or this process'
    environment), child ``i`` serves its metrics on ``P + i`` (see :func:`metrics_ports`).
    """
    child_env = {**os.environ, **(env or {}), PARENT_PID_ENV: str(os.getpid())}
    ports = metrics_ports(child_env.get(METRICS_PORT_ENV, ""), count)
    procs: list[subprocess.Popen] = []
    try:
        for port in ports:
            port_env = {METRICS_PORT_ENV: str(port)} if port else {}
            procs.append(subprocess.Popen(list(argv), env={**child_env, **port_env}))
        yield procs
    finally:
        stop_processes(procs)


def metrics_ports(base: str | int, count: int) -> list[int]:
    """The metrics port of each of ``count`` workers on one host: ``base``, ``base + 1``...;
    all 0 (not served) when ``base`` is 0 or empty. A base that is not a port, or a range
    that runs past 65535, is a :class:`ConfigError`."""
    raw = str(base).strip()
    if not raw:
        return [0] * count
    if not raw.isdigit() or int(raw) > 65535:
        raise ConfigError(f"{METRICS_PORT_ENV}={raw!r}: a port (1-65535), or 0 for none")
    first = int(raw)
    if not first:
        return [0] * count
    if first + count - 1 > 65535:
        raise ConfigError(
            f"{METRICS_PORT_ENV}={first}: {count} workers need ports up to {first + count - 1}"
        )
    return [first + i for i in range(count)]


@contextlib.contextmanager
def signals_exit(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """In the main thread, turn ``signals`` into ``SystemExit(128 + signum)`` so that
    ``finally`` blocks (stopping worker processes) run when systemd, Docker or Kubernetes
    stop the command. The default action would end the process on the spot.

    uvicorn restores these handlers after its own graceful shutdown and raises the signal
    again, which then lands here.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, _exit) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def die_with_parent(parent_pid: int | None = None, poll_s: float = 1.0) -> None:
    """Make this process end (SIGTERM to itself) when its parent dies.

    ``parent_pid`` defaults to ``CROSSFEED_PARENT_PID`` (set by :func:`worker_processes`);
    without one this does nothing, so a worker started by hand keeps running. On Linux
    the kernel delivers the signal (``PR_SET_PDEATHSIG``); everywhere a daemon thread
    also watches the parent pid, which covers other systems and the parent having died
    before this call.
    """
    if parent_pid is None:
        raw = os.environ.get(PARENT_PID_ENV, "")
        parent_pid = int(raw) if raw.isdigit() else None
    if parent_pid is None:
        return
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="crossfeed-parent-watch", daemon=True).start()


def stop_processes(procs: list[subprocess.Popen], timeout: float = 20.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_api(settings: Settings, ready: threading.Event | None = None) -> None:
    import uvicorn

    from crossfeed.api.app import create_app

    app = create_app(settings)
    config = uvicorn.Config(
        app, host=settings.api.host, port=settings.api.port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    if ready is not None:
        orig_startup = server.startup

        async def startup(sockets=None):  # type: ignore[no-untyped-def]
            await orig_startup(sockets)
            ready.set()

        server.startup = startup  # type: ignore[method-assign]
    server.run()


def api_url(settings: Settings) -> str:
    return f"http://{settings.api.host}:{settings.api.port}"


def corpus_env(media_roots: list[Path]) -> dict[str, str]:
    """Environment that lets workers read the corpus' local media files."""
    return {"CROSSFEED_MEDIA_ROOTS": json.dumps([str(p) for p in media_roots])}
