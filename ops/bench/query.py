"""``crossfeed bench query``: search latency through the HTTP API, uncached vs cached.

The API (``create_app``) runs under uvicorn in a thread of this process on a free
127.0.0.1 port and is called over real HTTP with httpx, so each sample is a whole
round trip: HTTP parsing, cache look-up in Redis, encoding, Milvus search.

Three query kinds (text, uploaded picture, post id) are each measured in two
passes over the same distinct queries: the first pass misses the cache (every
query is new), the second hits it. Every response's ``cached`` flag is checked
and the hit counts are reported, so a cache that silently does nothing shows up
as a ratio near 1 with zero hits rather than as a good number.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from crossfeed.core.schema import Post
from crossfeed.core.settings import Settings
from crossfeed.ops.bench.corpus import modality
from crossfeed.ops.bench.report import BenchReport, Table, free_port, ratio, summarize
from crossfeed.ops.exceptions import BenchError

log = logging.getLogger(__name__)

SEARCH = "/v1/search"


class ApiServer:
    """uvicorn serving ``app`` on 127.0.0.1:<free port> in a daemon thread."""

    def __init__(self, app: Any, *, port: int | None = None, start_timeout_s: float = 300.0):
        import uvicorn

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="bench-api", daemon=True)
        self._timeout = start_timeout_s
        self.start_s: float | None = None

    def __enter__(self) -> ApiServer:
        t0 = time.monotonic()
        self._thread.start()
        while not self.server.started:
            if not self._thread.is_alive():
                raise BenchError("the API server stopped during startup; see the log above")
            if time.monotonic() - t0 > self._timeout:
                self.server.should_exit = True
                raise BenchError(f"the API did not start within {self._timeout:.0f} s")
            time.sleep(0.05)
        self.start_s = time.monotonic() - t0
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)


def text_queries(posts: Sequence[Post], n: int) -> list[str]:
    """``n`` distinct queries (distinct after the cache's normalisation) from the corpus:
    picture subjects first, then the opening words of post texts."""
    from crossfeed.api.cache import normalize_text_query

    seen: set[str] = set()
    out: list[str] = []
    candidates: list[str] = [str((p.metadata or {}).get("subject", "")) for p in posts]
    candidates += [" ".join(p.text.split()[:6]) for p in posts]
    for cand in [*candidates, *(f"picture number {i}" for i in range(n))]:
        key = normalize_text_query(cand)
        if key and key not in seen:
            seen.add(key)
            out.append(cand)
            if len(out) == n:
                break
    return out


def query_images(posts: Sequence[Post], n: int) -> list[bytes]:
    """PNG bytes of ``n`` distinct corpus pictures."""
    out: list[bytes] = []
    for post in posts:
        if modality(post) != "image":
            continue
        item = post.media[0]
        data = item.inline_bytes() if item.data_base64 else Path(str(item.path)).read_bytes()
        if data not in out:
            out.append(data)
        if len(out) == n:
            break
    return out


def _png(color: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buf, format="PNG")
    return buf.getvalue()


def timed_search(
    client: Any, kind: str, value: Any, top_k: int, filters: dict[str, Any] | None = None
) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    if kind == "image":
        form = {"top_k": str(top_k), **({"filters": json.dumps(filters)} if filters else {})}
        response = client.post(SEARCH, files={"file": ("query.png", value, "image/png")}, data=form)
    else:
        field = "text" if kind == "text" else "post_id"
        response = client.post(
            SEARCH, json={field: value, "top_k": top_k, "filters": filters or {}}
        )
    ms = (time.perf_counter() - t0) * 1000
    if response.status_code != 200:
        raise BenchError(f"{kind} search failed: HTTP {response.status_code} {response.text[:300]}")
    return ms, response.json()


def _pass(
    client: Any, kind: str, values: Sequence[Any], top_k: int, label: str, progress: bool
) -> dict[str, Any]:
    from tqdm import tqdm

    samples, took, hits = [], [], 0
    for value in tqdm(values, desc=f"query {kind} {label}", unit="req", disable=not progress):
        ms, body = timed_search(client, kind, value, top_k)
        samples.append(ms)
        took.append(float(body.get("took_ms") or 0.0))
        hits += bool(body.get("cached"))
    return {
        "summary": summarize(samples),
        "samples_ms": samples,
        "server_took_ms": summarize(took),
        "cache_hits": hits,
        "requests": len(samples),
    }


def run_query_bench(
    settings: Settings,
    posts: Sequence[Post],
    post_ids: Sequence[str],
    *,
    embedder: Any = None,
    queries: int = 30,
    images: int = 15,
    top_k: int = 10,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
) -> BenchReport:
    """Uncached and cached latency of text, picture and post-id searches via HTTP."""
    import httpx

    from crossfeed.api.app import create_app

    if queries < 1 or images < 1 or top_k < 1:
        raise BenchError("queries, images and top_k must be >= 1")
    material: dict[str, list[Any]] = {
        "text": text_queries(posts, queries),
        "image": query_images(posts, images),
        "post": list(dict.fromkeys(post_ids))[:queries],
    }
    empty = [k for k, v in material.items() if not v]
    if empty:
        raise BenchError(f"no query material for {empty}")
    results: dict[str, Any] = {"kinds": {}, "top_k": top_k, **(extra or {})}
    app = create_app(settings, embedder=embedder)
    with (
        ApiServer(app) as api,
        httpx.Client(
            base_url=api.url,
            timeout=120.0,
            trust_env=False,  # never via an HTTP proxy
        ) as client,
    ):
        results["api_start_s"] = api.start_s
        results["embedder_preloaded"] = embedder is not None
        # Warm-up (not measured): first Milvus search, first encode of each kind.
        timed_search(client, "text", "bench warm-up query", top_k)
        timed_search(client, "image", _png((200, 30, 30)), top_k)
        for kind, values in material.items():
            uncached = _pass(client, kind, values, top_k, "uncached", progress)
            cached = _pass(client, kind, values, top_k, "cached", progress)
            results["kinds"][kind] = {
                "uncached": uncached,
                "cached": cached,
                "ratio_p50": ratio(uncached["summary"]["p50"], cached["summary"]["p50"]),
            }
    params = {"queries": queries, "images": images, "top_k": top_k}
    return build_report(results, **params)


def _row(kind: str, entry: dict[str, Any], pick: Callable[[dict[str, Any]], Any]) -> list[Any]:
    u, c = entry["uncached"], entry["cached"]
    return [
        kind,
        u["requests"],
        pick(u["summary"]),
        u["summary"]["p95"],
        pick(c["summary"]),
        c["summary"]["p95"],
        entry["ratio_p50"],
        f"{u['cache_hits']} / {c['cache_hits']}",
    ]


def build_report(results: dict[str, Any], **parameters: Any) -> BenchReport:
    table = Table(
        "Search latency over HTTP (ms per request)",
        [
            "query",
            "n",
            "uncached p50",
            "uncached p95",
            "cached p50",
            "cached p95",
            "uncached/cached p50",
            "cache hits (pass 1 / pass 2)",
        ],
    )
    for kind, entry in results["kinds"].items():
        table.add(*_row(kind, entry, lambda s: s["p50"]))
    server = Table(
        "Server-side time of uncached requests (took_ms, ms)",
        ["query", "p50", "p95"],
        [
            [k, e["uncached"]["server_took_ms"]["p50"], e["uncached"]["server_took_ms"]["p95"]]
            for k, e in results["kinds"].items()
        ],
    )
    notes = [
        "Pass 1 sends distinct queries (cache misses), pass 2 repeats them (hits); "
        "'post' searches by an indexed post's stored vector, 'image' uploads a PNG.",
        f"API startup (models + index ready): {results.get('api_start_s', 0):.1f} s"
        + (" with a preloaded embedder." if results.get("embedder_preloaded") else "."),
    ]
    if results.get("index_rows") is not None:
        built = results.get("index_built_by", "bench ingest")
        notes.append(f"Index searched: {results['index_rows']} rows ({built}).")
    return BenchReport(
        name="query",
        title="crossfeed bench: query latency",
        parameters=parameters,
        results=results,
        tables=[table, server],
        notes=notes,
    )
