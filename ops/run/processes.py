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

from crossfeed.core.settings import Settings


@contextlib.contextmanager
def worker_processes(
    count: int, env: dict[str, str] | None = None
) -> Iterator[list[subprocess.Popen]]:
    """Start ``count`` worker processes; stop them (SIGTERM, then SIGKILL) on exit."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "crossfeed.ops.cli", "worker"],
            env={**os.environ, **(env or {})},
        )
        for _ in range(count)
    ]
    try:
        yield procs
    finally:
        stop_processes(procs)


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
