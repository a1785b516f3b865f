"""``crossfeed worker``, ``crossfeed serve`` and ``crossfeed demo``.

``worker`` runs the faust stream processors in this process (never with faust's
web server). ``serve`` starts worker processes and runs the API (uvicorn) in
this process; Ctrl-C stops both. ``demo`` = ``up`` + build the sample corpus +
fit the bootstrap image head when none exists + produce the corpus through Kafka
+ ``serve``, printing progress and a few example queries.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from crossfeed.core.settings import Settings

log = logging.getLogger(__name__)

STAGES = ("normalize", "embed", "index")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run the stream processors (faust, no web server)")
    p.add_argument(
        "--stages", default=",".join(STAGES), help="comma-separated subset of " + ",".join(STAGES)
    )
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser("serve", help="run stream workers and the API against the engines")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--no-workers", action="store_true", help="API only")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("demo", help="up + sample corpus through Kafka + serve")
    p.add_argument(
        "--limit",
        type=int,
        default=1500,
        help="images from the clipart set (0 = all; default 1500)",
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--no-serve", action="store_true", help="stop once the stream is indexed")
    p.set_defaults(func=_cmd_demo)


# --------------------------------------------------------------------------- worker


def _cmd_worker(args: argparse.Namespace) -> int:
    from crossfeed.streams.worker import run_worker

    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise SystemExit(f"unknown stages: {sorted(unknown)}")
    run_worker(Settings(), stages=stages)
    return 0


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


# --------------------------------------------------------------------------- serve


def _run_api(settings: Settings, ready: threading.Event | None = None) -> None:
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


def _cmd_serve(args: argparse.Namespace) -> int:
    settings = Settings()
    count = 0 if args.no_workers else max(1, args.workers)
    with worker_processes(count) as procs:
        print(f"crossfeed: {len(procs)} worker process(es); API on {api_url(settings)}")
        _run_api(settings)
    return 0


def api_url(settings: Settings) -> str:
    return f"http://{settings.api.host}:{settings.api.port}"


# --------------------------------------------------------------------------- demo


def _cmd_demo(args: argparse.Namespace) -> int:
    from crossfeed.ops.run.demo import run_demo

    return run_demo(Settings(), limit=args.limit, seed=args.seed, serve=not args.no_serve)


def corpus_env(media_roots: list[Path]) -> dict[str, str]:
    """Environment that lets workers read the corpus' local media files."""
    import json

    return {"CROSSFEED_MEDIA_ROOTS": json.dumps([str(p) for p in media_roots])}
