"""``crossfeed worker`` and ``crossfeed serve``.

``worker`` runs the faust stream processors in this process (never with faust's
web server). ``serve`` starts worker processes and runs the API (uvicorn) in
this process; Ctrl-C stops both. With ``CROSSFEED_WORKER_METRICS_PORT`` set, each
worker serves Prometheus metrics: ``worker`` on that port, ``serve``'s workers on
that port plus their index.
"""

from __future__ import annotations

import argparse
import logging

from crossfeed.core.settings import Settings
from crossfeed.ops.run.processes import (
    api_url,
    die_with_parent,
    metrics_ports,
    run_api,
    signals_exit,
    worker_processes,
)
from crossfeed.streams.pipeline import STAGES, check_stages

log = logging.getLogger(__name__)


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


# --------------------------------------------------------------------------- worker


def _cmd_worker(args: argparse.Namespace) -> int:
    from crossfeed.streams.worker import run_worker

    stages = check_stages([s.strip() for s in args.stages.split(",") if s.strip()])
    die_with_parent()  # a worker started by serve/demo ends with them
    run_worker(Settings(), stages=stages)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    settings = Settings()
    count = 0 if args.no_workers else max(1, args.workers)
    ports = [p for p in metrics_ports(settings.stream.metrics_port, count) if p]
    with signals_exit(), worker_processes(count) as procs:
        print(f"crossfeed: {len(procs)} worker process(es); API on {api_url(settings)}")
        if ports:
            host = settings.stream.metrics_host
            print("crossfeed: worker metrics on " + ", ".join(f"{host}:{p}" for p in ports))
        run_api(settings)
    return 0
