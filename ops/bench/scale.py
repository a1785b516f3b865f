"""``crossfeed bench query --rows N``: the query API over an index of N rows.

The rows look like the corpus's: every one is a real embedding of a corpus post (its text
or its picture, by the serving model) plus Gaussian noise, re-normalised, with the base
post's tags and modality, a source (bluesky / mastodon / clipart) and a time spread over
30 days. They are written straight into a private Milvus collection (no stream), and the
API (uvicorn on a loopback port, over HTTP with httpx) is measured on them:

- uncached and cached text queries (p50 / p99), and filtered ones (source, tag, time);
- recall@10 of what the API serves (HNSW, one hit per post) against exact search
  (every row's cosine in numpy, the same filter), unfiltered and filtered;
- throughput with 1, 8 and 32 concurrent clients sending distinct (uncached) queries,
  and the errors seen (any non-200 answer).

The collection and the run's Redis keys are removed afterwards.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crossfeed.core.schema import Post
from crossfeed.core.settings import Settings
from crossfeed.ops.bench.query import ApiServer, text_queries, timed_search
from crossfeed.ops.bench.report import BenchReport, Table, rate, summarize
from crossfeed.ops.exceptions import BenchError

log = logging.getLogger(__name__)

SOURCES = ("bluesky", "mastodon", "clipart")
DAY_MS = 86_400_000
T0_MS = 1_780_000_000_000  # a fixed epoch for the rows' times (2026-05)
SPAN_DAYS = 30
NOISE = 0.6  # norm of the noise added to a unit base vector: cosine to it ~0.86
CHUNK = 5_000  # rows per upsert call (the index splits them into RPCs)


@dataclass
class ScaleIndex:
    """The rows written: vectors (unit, float32) and the fields filters look at."""

    vectors: np.ndarray  # (rows, dim)
    sources: np.ndarray  # (rows,) str
    tags: list[tuple[str, ...]]
    created_ms: np.ndarray  # (rows,) int64

    def exact_top(self, query: np.ndarray, k: int, mask: np.ndarray | None = None) -> list[str]:
        scores = self.vectors @ query.astype(np.float32)
        if mask is not None:
            scores = np.where(mask, scores, -np.inf)
        top = np.argpartition(-scores, k)[:k]
        top = top[np.argsort(-scores[top])]
        return [f"scale-{i}" for i in top if np.isfinite(scores[i])]


def base_vectors(
    embedder: Any, posts: Sequence[Post], images: int
) -> list[tuple[np.ndarray, Post, str]]:
    """Real embeddings of corpus posts: every text, and the first ``images`` pictures."""
    import io

    from PIL import Image

    out: list[tuple[np.ndarray, Post, str]] = []
    with_text = [p for p in posts if p.text.strip()]
    for post, vec in zip(with_text, embedder.embed_texts([p.text for p in with_text]), strict=True):
        out.append((np.asarray(vec, dtype=np.float32), post, "text"))
    pictured = [p for p in posts if p.media and p.media[0].kind == "image"][:images]
    pics = []
    for post in pictured:
        item = post.media[0]
        data = item.inline_bytes() if item.data_base64 else Path(str(item.path)).read_bytes()
        pics.append(Image.open(io.BytesIO(data)).convert("RGB"))
    if pics:
        for post, vec in zip(pictured, embedder.embed_images(pics), strict=True):
            out.append((np.asarray(vec, dtype=np.float32), post, "image"))
    if not out:
        raise BenchError("the corpus gave no vectors to build rows from")
    return out


def write_rows(
    index: Any,
    bases: list[tuple[np.ndarray, Post, str]],
    rows: int,
    version: str,
    *,
    seed: int,
    progress: bool,
) -> ScaleIndex:
    """``rows`` perturbed copies of ``bases`` upserted into ``index``; what was written."""
    from tqdm import tqdm

    from crossfeed.core.text import clean_text_and_hashtags, merge_hashtags, normalize_hashtags
    from crossfeed.indexer.base import IndexRow

    rng = np.random.default_rng(seed)
    dim = bases[0][0].shape[0]
    pick = rng.integers(0, len(bases), rows)
    other = rng.integers(0, len(bases), rows)
    # A row sits between its post and another (up to halfway), plus noise: the rows form
    # a continuum like real posts, not one tight clump per base post (a graph index
    # over clumps has unreachable islands, which real data does not).
    mix = rng.uniform(0.0, 0.5, rows).astype(np.float32)[:, None]
    table = np.stack([b[0] for b in bases]).astype(np.float32)
    vectors = (1 - mix) * table[pick] + mix * table[other]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors += rng.standard_normal((rows, dim)).astype(np.float32) * (NOISE / np.sqrt(dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    sources = np.array(SOURCES)[rng.integers(0, len(SOURCES), rows)]
    created = T0_MS + rng.integers(0, SPAN_DAYS * DAY_MS, rows)
    base_tags = [
        tuple(merge_hashtags(clean_text_and_hashtags(post.text)[1], normalize_hashtags(post.tags)))
        for _, post, _ in bases
    ]
    tags = [base_tags[b] for b in pick]
    index.ensure_ready(dim)
    with tqdm(total=rows, desc="index rows", unit="row", disable=not progress) as bar:
        for start in range(0, rows, CHUNK):
            chunk = []
            for i in range(start, min(rows, start + CHUNK)):
                _, post, modality = bases[pick[i]]
                chunk.append(
                    IndexRow(
                        row_id=f"scale-{i}:{modality}:{0 if modality == 'text' else 1}",
                        post_id=f"scale-{i}",
                        item=0 if modality == "text" else 1,
                        modality=modality,
                        vector=vectors[i].tolist(),
                        created_at_ms=int(created[i]),
                        author=f"@user{i % 5000}",
                        text=post.text[:200],
                        tags=tags[i],
                        lang="en",
                        model_version=version,
                        media_ref="",
                        source=str(sources[i]),
                    )
                )
            index.upsert(chunk)
            bar.update(len(chunk))
    return ScaleIndex(vectors, sources, tags, created)


def wait_indexed(settings: Settings, collection: str, rows: int, timeout_s: float = 1800) -> float:
    """Flush, then wait until Milvus' HNSW index covers every row; seconds waited."""
    from crossfeed.indexer.client import milvus_client

    client = milvus_client(settings.milvus, timeout_s=300.0)  # a flush of 200k rows
    started = time.monotonic()
    try:
        client.flush(collection)
        while True:
            done = [
                int(client.describe_index(collection, name).get("indexed_rows", 0))
                for name in client.list_indexes(collection)
            ]
            if done and min(done) >= rows:
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise BenchError(f"the index covered {done} of {rows} rows after {timeout_s:.0f} s")
            time.sleep(2.0)
    finally:
        client.close()


def _filters(index: ScaleIndex) -> dict[str, tuple[dict[str, Any], np.ndarray]]:
    """Filters people use, with the row mask each selects (for exact search)."""
    from datetime import UTC, datetime

    counts: dict[str, int] = {}
    for tags in index.tags:
        for t in tags:
            counts[t] = counts.get(t, 0) + 1
    out: dict[str, tuple[dict[str, Any], np.ndarray]] = {
        "source": ({"sources": ["bluesky"]}, index.sources == "bluesky"),
    }
    if counts:
        tag = max(counts, key=lambda t: counts[t])
        out["tag"] = ({"tags": [tag]}, np.array([tag in tags for tags in index.tags]))
    since, until = T0_MS + 10 * DAY_MS, T0_MS + 20 * DAY_MS

    def iso(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()

    mask = (index.created_ms >= since) & (index.created_ms < until)
    out["time"] = ({"since": iso(since), "until": iso(until)}, mask)
    return out


def _latency(samples: list[float], cached: int) -> dict[str, Any]:
    from crossfeed.ops.bench.report import percentile

    return {
        **summarize(samples),
        "p99": percentile(samples, 99),
        "cache_hits": cached,
        "samples_ms": samples,
    }


def _throughput(
    url: str, queries: Sequence[str], clients: int, requests: int, top_k: int, tag: str
) -> dict[str, Any]:
    """``requests`` searches from ``clients`` threads; distinct texts unless ``tag`` is ''."""
    import httpx

    from crossfeed.ops.bench.report import percentile

    lock = threading.Lock()
    counter = iter(range(requests))
    samples: list[float] = []
    errors: list[str] = []

    def work() -> None:
        with httpx.Client(base_url=url, timeout=60.0, trust_env=False) as client:
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                text = queries[n % len(queries)] + (f" {tag} {n}" if tag else "")
                try:
                    ms, _ = timed_search(client, "text", text, top_k)
                    with lock:
                        samples.append(ms)
                except Exception as exc:  # counted, never hidden: the target is 0 errors
                    with lock:
                        errors.append(str(exc)[:200])

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(work) for _ in range(clients)]:
            f.result()
    seconds = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": requests,
        "ok": len(samples),
        "errors": len(errors),
        "error_examples": errors[:3],
        "per_s": rate(len(samples), seconds),
        "p50_ms": percentile(samples, 50) if samples else None,
        "p99_ms": percentile(samples, 99) if samples else None,
    }


def run_scale_bench(
    settings: Settings,
    posts: Sequence[Post],
    *,
    rows: int,
    queries: int = 100,
    top_k: int = 10,
    images: int = 60,
    concurrency: Sequence[int] = (1, 8, 32),
    requests: int = 320,
    seed: int = 0,
    progress: bool = True,
) -> BenchReport:
    import httpx

    from crossfeed.api.app import create_app
    from crossfeed.encoders.model import load_embedder
    from crossfeed.indexer.milvus import MilvusIndex

    if rows < 1000 or queries < 3 or top_k < 1:
        raise BenchError("--rows must be >= 1000, --queries >= 3, --top-k >= 1")
    embedder = load_embedder(settings)
    bases = base_vectors(embedder, posts, images)
    index = MilvusIndex(settings.milvus)
    results: dict[str, Any] = {
        "rows": rows,
        "bases": len(bases),
        "noise": NOISE,
        "collection": settings.milvus.collection,
    }
    try:
        t0 = time.perf_counter()
        written = write_rows(index, bases, rows, embedder.version, seed=seed, progress=progress)
        results["write_s"] = time.perf_counter() - t0
        results["index_wait_s"] = wait_indexed(settings, settings.milvus.collection, rows)
        texts = text_queries(posts, queries)
        app = create_app(settings, embedder=embedder)
        with (
            ApiServer(app) as api,
            httpx.Client(base_url=api.url, timeout=120.0, trust_env=False) as client,
        ):
            timed_search(client, "text", "warm-up query", top_k)
            results["latency"] = _latency_passes(client, texts, top_k, _filters(written))
            results["recall"] = _recall(client, embedder, written, texts, top_k)
            results["throughput"] = [
                {**_throughput(api.url, texts, c, requests, top_k, f"u{c}"), "mode": "uncached"}
                for c in concurrency
            ] + [
                {**_throughput(api.url, texts, c, requests, top_k, ""), "mode": "cached"}
                for c in concurrency
            ]
    finally:
        index.drop()
        index.close()
    params = {"rows": rows, "queries": queries, "top_k": top_k, "requests": requests, "seed": seed}
    return build_scale_report(results, **params)


def check_scale_args(rows: int, concurrency: str, requests: int) -> list[int]:
    """The client counts of ``--concurrency`` ("1,8,32"); BenchError for bad options."""
    try:
        levels = [int(c) for c in concurrency.split(",") if c.strip()]
    except ValueError as exc:
        raise BenchError(f"--concurrency takes numbers like 1,8,32: {exc}") from exc
    if not levels or min(levels) < 1 or max(levels) > 256 or requests < 1:
        raise BenchError("--concurrency levels must be 1..256 and --requests positive")
    if rows < 1000:
        raise BenchError("--rows must be >= 1000")
    return levels


def run_private_scale_bench(base: Settings, posts: Sequence[Post], **kwargs: Any) -> BenchReport:
    """:func:`run_scale_bench` on a private collection and Redis key prefix, both removed
    afterwards (``bench query --rows`` and the ``scale`` part of ``bench all``)."""
    from crossfeed.ops.bench.live import BenchNames, bench_settings, delete_keys

    names = BenchNames.new()
    settings = bench_settings(base, names)
    try:
        return run_scale_bench(settings, posts, **kwargs)
    finally:
        delete_keys(settings, names.redis_prefix)


def _latency_passes(
    client: Any,
    texts: Sequence[str],
    top_k: int,
    filters: dict[str, tuple[dict[str, Any], np.ndarray]],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label in ("uncached", "cached"):
        samples, hits = [], 0
        for text in texts:
            ms, body = timed_search(client, "text", text, top_k)
            samples.append(ms)
            hits += bool(body.get("cached"))
        out[label] = _latency(samples, hits)
    for name, (flt, _) in filters.items():
        samples, hits = [], 0
        for text in texts:
            ms, body = timed_search(client, "text", f"{text} ({name})", top_k, flt)
            samples.append(ms)
            hits += bool(body.get("cached"))
        out[f"filtered by {name}"] = _latency(samples, hits)
    return out


def _recall(
    client: Any, embedder: Any, index: ScaleIndex, texts: Sequence[str], top_k: int
) -> dict[str, Any]:
    """Mean recall@k of the served results against exact search, per filter."""
    # One text at a time, as the API embeds a query: the int8 text tower quantizes its
    # activations per batch, so a text embedded among others gets a slightly different
    # vector, and on rows this close together that alone moved recall@10 by ~0.1.
    vectors = [embedder.embed_texts([text])[0] for text in texts]
    out: dict[str, Any] = {}
    cases = {"none": ({}, None), **_filters(index)}
    for name, (flt, mask) in cases.items():
        recalls = []
        for text, vec in zip(texts, vectors, strict=True):
            _, body = timed_search(client, "text", text, top_k, flt)
            served = {hit["id"] for hit in body["results"]}
            exact = index.exact_top(np.asarray(vec), top_k, mask)
            if exact:
                recalls.append(len(served & set(exact)) / len(exact))
        out[name] = {
            "mean": float(np.mean(recalls)),
            "min": float(np.min(recalls)),
            "queries": len(recalls),
        }
    return out


def build_scale_report(results: dict[str, Any], **parameters: Any) -> BenchReport:
    latency = Table(
        "Text search over HTTP at scale (ms per request)",
        ["query", "n", "p50", "p99", "cache hits"],
    )
    for name, entry in results["latency"].items():
        latency.add(name, entry["n"], entry["p50"], entry["p99"], entry["cache_hits"])
    recall = Table(
        f"recall@{parameters.get('top_k')} of the served index vs exact search",
        ["filter", "mean", "min", "queries"],
    )
    for name, entry in results["recall"].items():
        recall.add(name, entry["mean"], entry["min"], entry["queries"])
    throughput = Table(
        "Throughput (distinct texts = uncached; repeated = cached)",
        ["clients", "mode", "requests/s", "p50 ms", "p99 ms", "errors"],
    )
    for entry in results["throughput"]:
        throughput.add(
            entry["clients"],
            entry["mode"],
            entry["per_s"],
            entry["p50_ms"],
            entry["p99_ms"],
            entry["errors"],
        )
    lat = results["latency"]
    notes = [
        f"{results['rows']} rows from {results['bases']} real embeddings of corpus posts "
        "(texts and pictures): each row a point between one of them and another (up to "
        f"halfway) plus Gaussian noise of norm {results['noise']}, with the first one's tags "
        "and modality; written in "
        f"{results['write_s']:.0f} s, HNSW index complete {results['index_wait_s']:.0f} s later.",
        f"Targets: uncached p50 <= 15 ms (embedding included): {lat['uncached']['p50']:.1f} ms; "
        f"cached p50 <= 2 ms: {lat['cached']['p50']:.2f} ms; recall@10 >= 0.95: "
        f"{results['recall']['none']['mean']:.3f}; errors: "
        f"{sum(e['errors'] for e in results['throughput'])}.",
        "The API runs in this process (uvicorn in a thread), so the clients' threads share "
        "its CPU and GIL: throughput is a lower bound of a separate API process.",
    ]
    return BenchReport(
        name="query_scale",
        title="crossfeed bench: queries at scale",
        parameters=parameters,
        results=results,
        tables=[latency, recall, throughput],
        notes=notes,
    )
