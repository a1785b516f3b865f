"""``crossfeed bench ...``: measured speed numbers, as JSON + markdown + PNG.

Sub-commands::

    crossfeed bench engines    # start time of each local engine (spare ports, temp state)
    crossfeed bench encoders   # load time; texts/images/videos per second
    crossfeed bench ingest     # rows/s per modality and freshness through the pipeline
    crossfeed bench query      # API latency, uncached vs cached, per query kind
    crossfeed bench sources    # connector throughput, Jetstream frames -> Kafka
    crossfeed bench live       # standing queries: index-stage cost, produce -> searchable / SSE
    crossfeed bench workers    # 1 and 2 workers in one consumer group; one of two killed
    crossfeed bench soak       # RSS of a worker and an API process under half load, over time
    crossfeed bench all        # all of the above, one combined report

Each writes ``<out>/<name>.json``, ``<out>/<name>.md`` and ``<out>/<name>.png``
(default ``<CROSSFEED_STATE_DIR>/bench``) and prints the markdown. Speed targets
live here, never in timed unit tests; the reports give distributions over repeats
and ratios measured within one run. ingest and query run on the configured engines
with their own topics, collection and Redis prefix, removed afterwards.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from typing import Any

from crossfeed.ops.bench import suite

log = logging.getLogger(__name__)

ENGINE_NAMES = ("kafka", "redis", "milvus")
PARTS = ("engines", "encoders", "ingest", "query", *suite.EXTRA_PARTS)  # what `bench all` runs
_COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


# --------------------------------------------------------------------------- CLI


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=None, help="report dir (default <state>/bench)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-png", action="store_true", help="skip the PNG figure")
    p.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engines", default=",".join(ENGINE_NAMES), help="comma-separated subset")
    p.add_argument("--repeats", type=int, default=3, help="starts per engine (default 3)")
    p.add_argument("--milvus-repeats", type=int, default=2, help="Milvus starts (default 2)")


def _encoder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--texts", type=int, default=256, help="texts per repeat (default 256)")
    p.add_argument("--images", type=int, default=32, help="images per repeat (default 32)")
    p.add_argument("--videos", type=int, default=4, help="videos per repeat (default 4)")
    p.add_argument("--encoder-repeats", type=int, default=3, help="repeats (default 3)")
    p.add_argument("--batch-size", type=int, default=32, help="encoder batch (default 32)")


def _ingest_args(p: argparse.ArgumentParser, limit: int) -> None:
    p.add_argument("--limit", type=int, default=limit, help=f"corpus pictures (default {limit})")
    p.add_argument("--video-fraction", type=float, default=0.1, help="share of video posts")
    p.add_argument("--freshness-samples", type=int, default=10, help="idle freshness posts")


def _query_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--queries", type=int, default=30, help="distinct text/post queries")
    p.add_argument("--query-images", type=int, default=15, help="distinct picture queries")
    p.add_argument("--top-k", type=int, default=10)


def add_commands(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="measure engine, encoder, ingest and query speed")
    bsub = bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True)

    p = bsub.add_parser("engines", help="start time of each engine on spare ports")
    _common(p)
    _engine_args(p)
    p.set_defaults(func=_cmd_engines)

    p = bsub.add_parser("encoders", help="embedder load time and throughput per modality")
    _common(p)
    _encoder_args(p)
    p.add_argument("--limit", type=int, default=64, help="corpus pictures (default 64)")
    p.set_defaults(func=_cmd_encoders)

    p = bsub.add_parser("ingest", help="rows/s per modality and freshness, end to end")
    _common(p)
    _ingest_args(p, 300)
    p.add_argument("--keep", action="store_true", help="keep the collection, topics and Redis keys")
    p.add_argument(
        "--trends",
        choices=("on", "off", "compare"),
        default=None,
        help="run the worker's trends step (default: CROSSFEED_TRENDS), or compare: ingest "
        "with it off and on, --rounds times each, and report what it costs",
    )
    p.add_argument("--rounds", type=int, default=2, help="with --trends compare (default 2)")
    p.set_defaults(func=_cmd_ingest)

    p = bsub.add_parser("query", help="API latency, uncached vs cached")
    _common(p)
    _ingest_args(p, 100)
    _query_args(p)
    p.add_argument(
        "--collection", default=None, help="query this existing collection instead of building one"
    )
    p.add_argument(
        "--rows",
        type=int,
        default=None,
        help="instead: N synthetic rows like the corpus's (e.g. 200000): latency, recall@10 "
        "vs exact search, throughput at --concurrency",
    )
    p.add_argument("--concurrency", default="1,8,32", help="with --rows: client counts")
    p.add_argument("--requests", type=int, default=320, help="with --rows: per level")
    p.set_defaults(func=_cmd_query)

    p = bsub.add_parser("sources", help="connector throughput: Jetstream frames -> Kafka")
    _common(p)
    p.add_argument("--frames", type=int, default=5000, help="frames per run (default 5000)")
    p.add_argument("--repeats", type=int, default=3, help="runs per sink (default 3)")
    p.set_defaults(func=_cmd_sources)
    p = bsub.add_parser("live", help="standing queries: index-stage cost, produce -> SSE")
    _common(p)
    p.add_argument("--burst", type=int, default=300, help="posts of the max-rate burst")
    p.add_argument("--subscriptions", type=int, default=10_000, help="N (default 10000)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds per latency run")
    p.add_argument("--probe-every", type=int, default=10, help="1 probe post in this many")
    p.add_argument("--cost-rounds", type=int, default=6, help="index-stage cost rounds")
    p.set_defaults(func=_cmd_live)

    p = bsub.add_parser("workers", help="1 and 2 workers in one group; one of two killed")
    _common(p)
    suite.add_workers_args(p)
    p.set_defaults(func=_cmd_part)
    suite.add_soak_parser(bsub, _common).set_defaults(func=_cmd_part)

    p = bsub.add_parser("all", help="every bench, one combined report")
    _common(p)
    _engine_args(p)
    _encoder_args(p)
    _ingest_args(p, 300)
    _query_args(p)
    suite.add_all_args(p)
    p.add_argument("--skip", default="", help=f"comma-separated parts to skip: {','.join(PARTS)}")
    p.set_defaults(func=_cmd_all)


# --------------------------------------------------------------------------- helpers


def _settings() -> Any:
    from crossfeed.core.settings import Settings
    from crossfeed.ops.bench.live import pin_model_version

    return pin_model_version(Settings())


def _out_dir(args: argparse.Namespace, settings: Any) -> Path:
    return (args.out or settings.state.state_dir / "bench").expanduser().resolve()


def _progress(args: argparse.Namespace) -> bool:
    return not args.no_progress


def _emit(report: Any, args: argparse.Namespace, out: Path) -> int:
    from crossfeed.ops.bench.output import render_markdown, write_report
    from crossfeed.ops.bench.report import environment

    if not report.environment:
        report.environment = environment()
    paths = write_report(report, out, png=not args.no_png)
    png = paths.get("png")
    print(render_markdown(report, png.name if png else None))
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0


def _split(value: str, allowed: tuple[str, ...], what: str) -> list[str]:
    from crossfeed.ops.exceptions import BenchError

    items = [v.strip() for v in value.split(",") if v.strip()]
    unknown = sorted(set(items) - set(allowed))
    if unknown:
        raise BenchError(f"unknown {what} {unknown}; known: {', '.join(allowed)}")
    return items


def _corpus(args: argparse.Namespace, out: Path, limit: int | None = None) -> Any:
    from crossfeed.ops.bench.corpus import bench_corpus

    return bench_corpus(
        out,
        limit=limit or args.limit,
        seed=args.seed,
        video_fraction=getattr(args, "video_fraction", 0.1),
        progress=_progress(args),
    )


def _engines(args: argparse.Namespace, settings: Any) -> Any:
    from crossfeed.ops.bench.engines import run_engines_bench

    return run_engines_bench(
        settings,
        engines=_split(args.engines, ENGINE_NAMES, "engine(s)"),
        repeats=args.repeats,
        milvus_repeats=args.milvus_repeats,
        progress=_progress(args),
    )


def _encoders(args: argparse.Namespace, settings: Any, corpus: Any) -> tuple[Any, Any]:
    from crossfeed.ops.bench.encoders import run_encoders_bench

    return run_encoders_bench(
        settings,
        corpus,
        texts=args.texts,
        images=args.images,
        videos=args.videos,
        repeats=args.encoder_repeats,
        batch_size=args.batch_size,
        progress=_progress(args),
    )


def _check_engines(settings: Any) -> None:
    """ingest/query need the configured engines; say which one is missing, up front."""
    from crossfeed.ops.engines.control import status
    from crossfeed.ops.exceptions import BenchError

    down = [st.name for st in status(settings) if not st.reachable]
    if down:
        raise BenchError(f"engines not reachable: {', '.join(down)} (start them: crossfeed up)")


def _ingest_params(args: argparse.Namespace, corpus: Any) -> dict[str, Any]:
    return {
        "limit": args.limit,
        "video_fraction": args.video_fraction,
        "posts": len(corpus.posts),
        "freshness_samples": args.freshness_samples,
        "seed": args.seed,
    }


# --------------------------------------------------------------------------- commands


def _cmd_sources(args: argparse.Namespace) -> int:
    from crossfeed.ops.bench.sources import run_sources_bench
    from crossfeed.ops.exceptions import BenchError

    if args.frames < 1 or args.repeats < 1:
        raise BenchError("--frames and --repeats must be positive")
    settings = _settings()
    _check_engines(settings)
    report = run_sources_bench(
        settings,
        frames=args.frames,
        repeats=args.repeats,
        seed=args.seed,
        progress=_progress(args),
    )
    return _emit(report, args, _out_dir(args, settings))


def _cmd_engines(args: argparse.Namespace) -> int:
    settings = _settings()
    return _emit(_engines(args, settings), args, _out_dir(args, settings))


def _cmd_encoders(args: argparse.Namespace) -> int:
    settings = _settings()
    out = _out_dir(args, settings)
    report, _ = _encoders(args, settings, _corpus(args, out))
    return _emit(report, args, out)


def _cmd_ingest(args: argparse.Namespace) -> int:
    from crossfeed.ops.bench.ingest import build_report, run_ingest
    from crossfeed.ops.bench.live import BenchNames, bench_settings, live_pipeline

    base = _settings()
    _check_engines(base)
    out = _out_dir(args, base)
    corpus = _corpus(args, out)
    if args.trends == "compare":
        return _ingest_trends_compare(args, base, out, corpus)
    if args.trends is not None:
        from crossfeed.ops.bench.trends import with_trends

        base = with_trends(base, enabled=args.trends == "on")
    names = BenchNames.new()
    settings = bench_settings(base, names, corpus.media_roots)
    with live_pipeline(settings, names, out / "ingest-worker.log", keep=args.keep) as live:
        results, _ = run_ingest(
            live,
            corpus.posts,
            freshness_samples=args.freshness_samples,
            progress=_progress(args),
        )
    if args.keep:
        results["kept"] = {"collection": names.collection, "topics": names.topics}
    return _emit(build_report(results, **_ingest_params(args, corpus)), args, out)


def _ingest_trends_compare(args: argparse.Namespace, base: Any, out: Path, corpus: Any) -> int:
    from crossfeed.ops.bench.trends import build_trends_report, run_trends_overhead

    results = run_trends_overhead(
        base,
        corpus,
        out,
        rounds=args.rounds,
        freshness_samples=args.freshness_samples,
        progress=_progress(args),
    )
    params = {**_ingest_params(args, corpus), "rounds": args.rounds}
    params["trends_window_s"] = base.trends.window_s
    return _emit(build_trends_report(results, **params), args, out)


def _cmd_part(args: argparse.Namespace) -> int:  # bench workers, bench soak
    base = _settings()
    _check_engines(base)
    out = _out_dir(args, base)
    return _emit(suite.single_part(args, base, out), args, out)


def _cmd_live(args: argparse.Namespace) -> int:
    from crossfeed.ops.bench.push import run_live_bench

    base = _settings()
    _check_engines(base)
    out = _out_dir(args, base)
    return _emit(run_live_bench(base, out, args), args, out)


def _cmd_query(args: argparse.Namespace) -> int:
    from crossfeed.ops.bench.query import run_query_bench

    base = _settings()
    _check_engines(base)
    out = _out_dir(args, base)
    if args.collection:
        return _emit(_query_existing(args, base, out), args, out)
    if args.rows is not None:
        return _emit(_query_scale(args, base, out), args, out)
    from crossfeed.ops.bench.ingest import run_ingest
    from crossfeed.ops.bench.live import BenchNames, bench_settings, live_pipeline

    corpus = _corpus(args, out)
    names = BenchNames.new()
    settings = bench_settings(base, names, corpus.media_roots)
    with live_pipeline(settings, names, out / "query-worker.log") as live:
        ingest, indexed = run_ingest(
            live, corpus.posts, freshness_samples=0, progress=_progress(args)
        )
        index_info = {
            "index_rows": ingest["rows_in_collection"],
            "index_built_by": "bench",
            "collection": names.collection,
        }
        report = run_query_bench(
            settings,
            corpus.posts,
            indexed,
            queries=args.queries,
            images=args.query_images,
            top_k=args.top_k,
            progress=_progress(args),
            extra=index_info,
        )
    return _emit(report, args, out)


def _query_scale(args: argparse.Namespace, base: Any, out: Path) -> Any:
    """``bench query --rows N`` on a private collection and key prefix (removed after)."""
    from crossfeed.ops.bench.scale import check_scale_args, run_private_scale_bench

    levels = check_scale_args(args.rows, args.concurrency, args.requests)  # before the corpus
    return run_private_scale_bench(
        base,
        _corpus(args, out).posts,
        rows=args.rows,
        queries=args.queries,
        top_k=args.top_k,
        images=args.query_images,
        concurrency=levels,
        requests=args.requests,
        seed=args.seed,
        progress=_progress(args),
    )


def _query_existing(args: argparse.Namespace, base: Any, out: Path) -> Any:
    """Query ``--collection`` as it is; only the cache keys are private (and removed)."""
    from crossfeed.ops.bench.live import BenchNames, RowProbe, bench_settings, delete_keys
    from crossfeed.ops.bench.query import run_query_bench
    from crossfeed.ops.exceptions import BenchError

    if not _COLLECTION_NAME.match(args.collection):
        raise BenchError(f"invalid collection name {args.collection!r}")
    names = BenchNames.new()
    settings = bench_settings(base, names)
    settings.milvus = settings.milvus.model_copy(update={"collection": args.collection})
    probe = RowProbe(settings)
    try:
        if not probe.exists():
            raise BenchError(f"collection {args.collection!r} does not exist")
        post_ids = probe.post_ids(args.queries)
        rows = probe.count(strong=True)
    finally:
        probe.close()
    corpus = _corpus(args, out, limit=max(args.query_images, 20))
    try:
        return run_query_bench(
            settings,
            corpus.posts,
            post_ids,
            queries=args.queries,
            images=args.query_images,
            top_k=args.top_k,
            progress=_progress(args),
            extra={"index_rows": rows, "index_built_by": f"existing {args.collection}"},
        )
    finally:
        delete_keys(settings, names.redis_prefix)


def run_all(args: argparse.Namespace, base: Any, out: Path, skip: set[str]) -> Any:
    """Engines, encoders, then ingest and query in one live pipeline; one report.

    The embedder the encoder bench loaded is handed to the API of the query bench, so
    the models are loaded once in this process (the worker process loads its own).
    """
    from crossfeed.ops.bench.ingest import build_report as ingest_report
    from crossfeed.ops.bench.ingest import run_ingest
    from crossfeed.ops.bench.live import BenchNames, bench_settings, live_pipeline
    from crossfeed.ops.bench.query import run_query_bench
    from crossfeed.ops.bench.summary import combine

    reports: dict[str, Any] = {}
    corpus = _corpus(args, out) if set(PARTS) - skip - {"engines", *suite.NO_CORPUS} else None
    if "engines" not in skip:
        reports["engines"] = _engines(args, base)
    embedder = None
    if "encoders" not in skip:
        assert corpus is not None
        reports["encoders"], embedder = _encoders(args, base, corpus)
    if {"ingest", "query"} - skip:
        assert corpus is not None
        names = BenchNames.new()
        settings = bench_settings(base, names, corpus.media_roots)
        fresh = args.freshness_samples if "ingest" not in skip else 0
        with live_pipeline(settings, names, out / "all-worker.log") as live:
            results, indexed = run_ingest(
                live, corpus.posts, freshness_samples=fresh, progress=_progress(args)
            )
            if "ingest" not in skip:
                reports["ingest"] = ingest_report(results, **_ingest_params(args, corpus))
            if "query" not in skip:
                reports["query"] = run_query_bench(
                    settings,
                    corpus.posts,
                    indexed,
                    embedder=embedder,
                    queries=args.queries,
                    images=args.query_images,
                    top_k=args.top_k,
                    progress=_progress(args),
                    extra={"index_rows": results["rows_in_collection"]},
                )
    reports.update(suite.run_extra_parts(args, base, out, skip, corpus))
    return combine(reports)


def _cmd_all(args: argparse.Namespace) -> int:
    settings = _settings()
    skip = set(_split(args.skip, PARTS, "part(s)"))
    if skip >= set(PARTS):
        from crossfeed.ops.exceptions import BenchError

        raise BenchError("nothing to run: every part is skipped")
    suite.check_extra_args(args, skip)
    if suite.ENGINE_PARTS - skip:
        _check_engines(settings)
    out = _out_dir(args, settings)
    report = run_all(args, settings, out, skip)
    return suite.emit_json(report, args, out) if args.json else _emit(report, args, out)
