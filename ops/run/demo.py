"""``crossfeed demo``: the whole pipeline on embedded defaults, end to end.

up (local engines) -> sample corpus -> bootstrap image head (when none is fitted)
-> topics -> workers + API -> produce the corpus through Kafka -> wait until it is
indexed -> example queries -> "ready" -> serve until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import threading
import time
from collections.abc import Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from crossfeed.core.schema import Post
from crossfeed.core.settings import Settings
from crossfeed.indexer.collections import default_collection
from crossfeed.ops.run.processes import (
    api_url,
    corpus_env,
    run_api,
    signals_exit,
    worker_processes,
)

log = logging.getLogger(__name__)


def add_commands(sub: argparse._SubParsersAction) -> None:
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


def _cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(Settings(), limit=args.limit, seed=args.seed, serve=not args.no_serve)


EXAMPLE_QUERIES = ("cute cat", "flowers", "a car on the road", "music", "food")
# Stop waiting for the index when it has not grown for this long after the last post.
_STALL_S = 60.0
# Once the expected rows are in, wait this long without growth for the last moments.
_SETTLE_S = 5.0


def expected_rows(posts: list[Post]) -> int:
    """Rows the index should hold at least once the corpus is in: reposts are not
    embedded; videos long enough for moments add a row per moment on top."""
    rows = 0
    for post in posts:
        if (post.metadata or {}).get("repost_of"):
            continue
        rows += (1 if (post.text.strip() or post.tags) else 0) + len(post.media)
    return rows


def _group(settings: Settings) -> str:
    from crossfeed.streams.app import consumer_group
    from crossfeed.streams.pipeline import STAGES

    return consumer_group(settings, STAGES, None)


def _ensure_corpus(settings: Settings, limit: int, seed: int, console: Console):  # type: ignore[no-untyped-def]
    from crossfeed.corpus.build import build_corpus, ensure_clipart

    out = settings.state.state_dir / "corpus" / f"limit{limit}-seed{seed}"
    root = ensure_clipart()
    if root is None:
        console.print("[yellow]openclipart-png is not installed; using a small generated set")
    t0 = time.monotonic()
    corpus = build_corpus(out, clipart_root=root, limit=limit or None, seed=seed)
    console.print(
        f"corpus: {len(corpus.posts)} posts in {time.monotonic() - t0:.1f}s -> {corpus.posts_path}"
    )
    return corpus


def _ensure_head(settings: Settings, corpus, console: Console) -> str:  # type: ignore[no-untyped-def]
    """Fit the bootstrap ridge head on the corpus' train split unless a head exists."""
    from crossfeed.corpus.io import split_posts, write_posts
    from crossfeed.encoders.versions import list_versions
    from crossfeed.train.ridge import fit_bootstrap_head

    if settings.encoder.model_version != "latest":  # the operator chose one
        return settings.encoder.model_version
    versions = list_versions(settings.models_dir)
    if versions:
        console.print(f"model: using head version {versions[0].version} from {settings.models_dir}")
        return versions[0].version
    train, _test = split_posts(corpus.posts, test_fraction=0.2, seed=0)
    train_path = corpus.out_dir / "train.jsonl"
    write_posts(train, train_path)
    console.print(f"model: fitting the bootstrap image head on {len(train)} train posts")
    version = fit_bootstrap_head(
        train_path, settings, cache_path=corpus.out_dir / "features.npz", notes="demo bootstrap"
    )
    console.print(f"model: head version {version} saved under {settings.models_dir}")
    return version


def _wait_indexed(
    settings: Settings,
    expected: int,
    console: Console,
    workers: Sequence[subprocess.Popen] = (),
) -> tuple[int, float, str | None]:
    """Rows indexed, seconds waited, and why indexing stalled (None when it completed).

    Done once ``expected`` rows are in and the count is quiet; stalled when the count
    has not grown for ``_STALL_S`` short of that, or when every worker has exited.
    """
    from crossfeed.indexer.milvus import MilvusIndex

    index = MilvusIndex(settings.milvus)
    start = time.monotonic()
    last_growth, last = start, -1
    columns = (TextColumn("indexed"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("index", total=expected)
        while True:
            try:
                n = index.count()
            except Exception as exc:  # collection not created yet
                log.debug("count failed: %s", exc)
                n = 0
            bar.update(task, completed=min(n, expected))
            if n != last:
                last, last_growth = n, time.monotonic()
            quiet = time.monotonic() - last_growth
            # Video moments add rows beyond ``expected``: done once it is reached and quiet.
            if n >= expected and quiet > _SETTLE_S:
                break
            exited = [w.returncode for w in workers if w.poll() is not None]
            why = None
            if workers and len(exited) == len(workers):
                why = f"the worker exited with status {exited[0]} (its log is above)"
            elif quiet > _STALL_S:
                why = (
                    f"no new rows for {_STALL_S:.0f} s with {max(last, 0)} of {expected} "
                    f"indexed into {settings.milvus.collection}; the worker (consumer group "
                    f"{_group(settings)}) is running: look for dead letters on "
                    f"{settings.kafka.topic_deadletter} and errors in its log above"
                )
            if why is not None:
                index.close()
                return last, time.monotonic() - start, why
            time.sleep(1.0)
    index.close()
    return last, time.monotonic() - start, None


def _example_queries(settings: Settings, console: Console) -> None:
    import httpx

    url = api_url(settings) + "/v1/search"
    with httpx.Client(timeout=60) as client:
        for q in EXAMPLE_QUERIES:
            body = {"text": q, "top_k": 5, "filters": {"modalities": ["image", "video"]}}
            t0 = time.perf_counter()
            r = client.post(url, json=body)
            cold = (time.perf_counter() - t0) * 1000
            t0 = time.perf_counter()
            client.post(url, json=body)
            warm = (time.perf_counter() - t0) * 1000
            if r.status_code != 200:
                console.print(f"[red]{q!r}: HTTP {r.status_code} {r.text[:200]}")
                continue
            hits = r.json().get("results", [])
            console.print(f"[bold]{q!r}[/] ({cold:.0f} ms uncached, {warm:.1f} ms cached)")
            for h in hits:
                console.print(
                    f"   {h['score']:.3f} {h['modality']:5s} {h.get('media_ref') or ''}"
                    f"  [dim]{(h.get('text') or '')[:60]}"
                )


def _example_suggestions(settings: Settings, posts: list[Post], console: Console) -> None:
    """A few untagged posts' media with the tags the stream proposed for them."""
    import httpx

    untagged = [
        p
        for p in posts
        if p.media and not p.tags and "#" not in p.text and not (p.metadata or {}).get("repost_of")
    ]
    if not untagged:
        return
    console.print("[bold]tags the stream suggested for untagged posts[/] (hidden category in grey)")
    with httpx.Client(timeout=30) as client:
        for post in untagged[-5:]:  # the last ones had the most neighbours indexed before them
            r = client.get(api_url(settings) + f"/v1/posts/{post.id}")
            if r.status_code != 200:
                continue
            items = [i for i in r.json()["items"] if i.get("moment") is None]  # moments repeat them
            suggested = dict.fromkeys(t for item in items for t in item.get("suggested_tags", []))
            category = (post.metadata or {}).get("category_path", "?")
            console.print(
                f"   {post.id}: {', '.join(suggested) or '(none)'}  [dim]category: {category}"
            )


def run_demo(settings: Settings, *, limit: int, seed: int, serve: bool = True) -> int:
    from crossfeed.ops.data.produce import ensure_topics, produce
    from crossfeed.ops.engines.control import up

    console = Console()
    console.rule("crossfeed demo")
    for st in up(settings):
        console.print(f"engine: {st.line()}")
    corpus = _ensure_corpus(settings, limit, seed, console)
    settings.stream.media_roots = corpus.media_roots
    # The translation step: untagged images and videos get tags from their neighbours.
    env = corpus_env(corpus.media_roots) | {"CROSSFEED_SUGGEST_TAGS": "1"}
    version = _ensure_head(settings, corpus, console)
    # Each head version gets its own collection (its own space, maybe its own dimension),
    # and both are pinned: a head saved later (crossfeed train, eval --save) then never
    # meets a collection of another version, here or in the workers.
    settings.encoder.model_version = version
    settings.milvus.collection = default_collection(settings.milvus.collection, version)
    env |= {"CROSSFEED_MODEL_VERSION": version, "CROSSFEED_COLLECTION": settings.milvus.collection}
    console.print(f"model: serving {version} from collection {settings.milvus.collection}")
    ensure_topics(settings.kafka)
    expected = expected_rows(corpus.posts)

    api_ready = threading.Event()
    api_thread = threading.Thread(target=run_api, args=(settings, api_ready), daemon=True)
    with signals_exit(), worker_processes(1, env=env) as workers:
        api_thread.start()
        t0 = time.monotonic()
        sent = produce(corpus.posts, settings.kafka)
        produce_s = time.monotonic() - t0
        console.print(f"produced {sent} posts to {settings.kafka.topic_raw} in {produce_s:.1f}s")
        rows, wait_s, stalled = _wait_indexed(settings, expected, console, workers)
        rate = rows / max(wait_s + produce_s, 1e-9)
        console.print(
            f"indexed {rows}/{expected} rows in {wait_s + produce_s:.1f}s ({rate:.1f} rows/s)"
        )
        if stalled is not None:
            console.print(f"[bold red]indexing stalled[/]: {stalled}")
            return 1
        if not api_ready.wait(timeout=120):
            console.print("[red]the API did not start; see the log above")
            return 1
        _example_queries(settings, console)
        _example_suggestions(settings, corpus.posts, console)
        summary = {"posts": sent, "rows": rows, "expected_rows": expected, "api": api_url(settings)}
        console.print(json.dumps(summary), soft_wrap=True)  # one parseable line
        console.print(f"[bold green]ready[/]: {api_url(settings)}  (Ctrl-C stops)")
        if not serve:
            return 0 if rows >= expected else 1
        try:
            while api_thread.is_alive():
                api_thread.join(timeout=1.0)
        except KeyboardInterrupt:
            console.print("stopping")
    return 0
