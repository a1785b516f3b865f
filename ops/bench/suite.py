"""The parts of ``crossfeed bench all`` beyond engines, encoders, ingest and query.

- ``live``: ``bench live`` (maximum ingest rate, then produce -> searchable and -> SSE at
  half of it, index-stage cost of standing queries): the freshness-at-half-load figure.
- ``workers``: ``bench workers`` (1 and 2 workers in one group, one of two killed).
- ``scale``: ``bench query --rows N`` (latency, cache, recall@10 on N rows; 200,000 by
  default): the query figures.
- ``soak``: ``bench soak`` (RSS of a worker and an API process over 10 minutes at half
  load), last: ``soak_rss_growth``.

Each runs on its own private names (topics, group, collection, Redis prefix), removed
afterwards. ``--json`` prints one JSON object: every headline figure
(:mod:`crossfeed.ops.bench.targets`), None where its part did not run, with ``targets``
and ``met``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from crossfeed.ops.bench import soak_cli

EXTRA_PARTS = ("live", "workers", "scale", "soak")
NO_CORPUS = frozenset({"live", "workers", "soak"})  # parts that do not use the bench corpus
ENGINE_PARTS = frozenset({"ingest", "query", *EXTRA_PARTS})  # need the configured engines


def add_workers_args(p: Any, prefix: str = "") -> None:
    """Options of ``bench workers`` (``p``: a parser or an argument group)."""
    p.add_argument(
        f"--{prefix}posts", type=int, default=600, help="text posts per run (default 600)"
    )
    p.add_argument("--kill-posts", type=int, default=1000, help="posts of the kill run")
    p.add_argument(
        "--settle", type=float, default=120.0, help="kill run: seconds without a new row "
        "before the missing posts count as lost (default 120)",
    )  # fmt: skip


def add_all_args(p: argparse.ArgumentParser) -> None:
    """Options of the extra parts, named so they cannot clash with the other parts'."""
    g = p.add_argument_group("live part (bench live)")
    g.add_argument("--live-burst", type=int, default=300, help="posts of the max-rate burst")
    g.add_argument("--live-subscriptions", type=int, default=10_000, help="N (default 10000)")
    g.add_argument("--live-duration", type=float, default=30.0, help="seconds per latency run")
    g.add_argument("--live-probe-every", type=int, default=10, help="1 probe post in this many")
    g.add_argument("--live-cost-rounds", type=int, default=6, help="index-stage cost rounds")
    g = p.add_argument_group("workers part (bench workers)")
    add_workers_args(g, prefix="worker-")
    g = p.add_argument_group("scale part (bench query --rows)")
    g.add_argument("--scale-rows", type=int, default=200_000, help="rows (default 200000)")
    g.add_argument("--scale-concurrency", default="1,8,32", help="client counts")
    g.add_argument("--scale-requests", type=int, default=320, help="requests per level")
    g = p.add_argument_group("soak part (bench soak)")
    soak_cli.add_soak_args(g, prefix="soak-")
    p.add_argument(
        "--json", action="store_true", help="print one JSON object of the headline figures"
    )


def check_extra_args(args: argparse.Namespace, skip: set[str]) -> None:
    """Bad options of the parts that will run, before anything starts."""
    from crossfeed.ops.bench.scale import check_scale_args

    if "scale" not in skip:
        check_scale_args(args.scale_rows, args.scale_concurrency, args.scale_requests)
    if "soak" not in skip:
        soak_cli.soak_config(args, prefix="soak-")


def run_extra_parts(
    args: argparse.Namespace,
    base: Any,
    out: Path,
    skip: set[str],
    corpus: Any,
) -> dict[str, Any]:
    """Run the parts of :data:`EXTRA_PARTS` not in ``skip``; ``{part: BenchReport}``."""
    reports: dict[str, Any] = {}
    if "live" not in skip:
        from crossfeed.ops.bench.push import run_live_bench

        live_args = SimpleNamespace(
            burst=args.live_burst,
            subscriptions=args.live_subscriptions,
            duration=args.live_duration,
            probe_every=args.live_probe_every,
            cost_rounds=args.live_cost_rounds,
            seed=args.seed,
        )
        reports["live"] = run_live_bench(base, out, live_args)
    if "workers" not in skip:
        reports["workers"] = workers_part(args, base, out, posts=args.worker_posts)
    if "scale" not in skip:
        from crossfeed.ops.bench.scale import check_scale_args, run_private_scale_bench

        reports["scale"] = run_private_scale_bench(
            base,
            corpus.posts,
            rows=args.scale_rows,
            queries=args.queries,
            top_k=args.top_k,
            images=args.query_images,
            concurrency=check_scale_args(
                args.scale_rows, args.scale_concurrency, args.scale_requests
            ),
            requests=args.scale_requests,
            seed=args.seed,
            progress=not args.no_progress,
        )
    if "soak" not in skip:  # last: its own worker and API process, minutes of load
        reports["soak"] = soak_cli.run_soak_part(
            args, base, out, progress=not args.no_progress, prefix="soak-"
        )
    return reports


def add_soak_parser(bsub: Any, common: Any) -> Any:
    """The ``bench soak`` sub-command (see :mod:`crossfeed.ops.bench.soak_cli`)."""
    return soak_cli.add_soak_parser(bsub, common)


def single_part(args: argparse.Namespace, base: Any, out: Path) -> Any:
    """``bench workers`` or ``bench soak`` on its own."""
    if args.bench_command == "soak":
        return soak_cli.run_soak_part(args, base, out, progress=not args.no_progress)
    return workers_part(args, base, out, posts=args.posts)


def workers_part(args: argparse.Namespace, base: Any, out: Path, *, posts: int) -> Any:
    """``bench workers`` (alone, or as a part of ``bench all``)."""
    from crossfeed.ops.bench.workers import run_workers_bench

    return run_workers_bench(
        base,
        out,
        posts=posts,
        kill_posts=args.kill_posts,
        settle_s=args.settle,
        progress=not args.no_progress,
    )


def emit_json(report: Any, args: argparse.Namespace, out: Path) -> int:
    """Write the report files; print only the headline figures, as one JSON object."""
    from crossfeed.ops.bench.output import write_report
    from crossfeed.ops.bench.report import environment
    from crossfeed.ops.bench.targets import figures

    if not report.environment:
        report.environment = environment()
    paths = write_report(report, out, png=not args.no_png)
    parts = {k: v for k, v in report.results.items() if k != "figures"}
    data = {
        **figures(parts),
        "parts": sorted(parts),
        "load_avg_1_5_15": report.environment.get("load_avg_1_5_15"),
        "report": str(paths["json"]),
    }
    print(json.dumps(data, indent=2))
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0
