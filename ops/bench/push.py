"""``crossfeed bench live``: standing queries under load, on the real pipeline.

On a private pipeline (one ``crossfeed worker`` process with the served models, the API
in this process, the run's own topics, collection and Redis prefix):

1. **Maximum ingest rate**: a burst of text posts; posts/s from the first send until
   all their rows are visible in Milvus.
2. **Index-stage cost of standing queries** (:mod:`crossfeed.ops.bench.standing`): the
   index stage (parse, upsert into Milvus, epoch bump, matching, freshness) run in this
   process on batches of 32 records, with no subscription and with N (10,000)
   subscriptions, alternating rounds; rows/s of each and their ratio, measured in one
   run; and the matching of one batch alone (old plain product vs the percolator).
3. **Latency at half the maximum rate**, with 1 and with N subscriptions: posts are
   produced at half the measured maximum for ``--duration`` seconds; every ``1/probe``
   of them matches a standing query created through the API. For those: produce ->
   searchable (all rows visible to an "Eventually" read, i.e. what a search finds) and
   produce -> SSE event received by a client of ``/v1/subscriptions/{id}/events``.

The N-1 extra subscriptions are real query embeddings written straight to the store
(:mod:`crossfeed.ops.bench.standing` says how they are made and why their thresholds).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np

from crossfeed.core.schema import Post
from crossfeed.core.settings import Settings
from crossfeed.ops.bench.live import LivePipeline
from crossfeed.ops.bench.report import BenchReport, Table, summarize
from crossfeed.ops.bench.standing import (
    add_filler_subscriptions,
    filler_vectors,
    index_stage_cost,
    match_cost,
)
from crossfeed.ops.exceptions import BenchError

log = logging.getLogger(__name__)

WORDS = [
    "sunset",
    "beach",
    "cat",
    "dog",
    "pizza",
    "bread",
    "car",
    "train",
    "forest",
    "river",
    "city",
    "night",
    "snow",
    "mountain",
    "coffee",
    "garden",
    "flower",
    "bird",
    "football",
    "concert",
    "market",
    "bridge",
    "rain",
    "storm",
    "harbour",
]


# Probe posts are the subscription's text plus a number: cosine ~0.95 with MiniLM; the
# background posts (random topic words) stay far below.
PROBE_MIN_SCORE = 0.8


def _summary(values: list[float]) -> dict[str, Any]:
    """summarize() plus the standard deviation; ``{"n": 0}`` for an empty sample."""
    if not values:
        return {"n": 0}
    out: dict[str, Any] = dict(summarize(values))
    out["sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return out


def _post(pid: str, text: str) -> Post:
    return Post(id=pid, source="bench", author="@bench", created_at=datetime.now(UTC), text=text)


def _filler_text(rng: np.random.Generator, i: int) -> str:
    words = rng.choice(WORDS, size=6)
    return f"{' '.join(words)} #{words[0]} {i}"


def _produce(live: LivePipeline, posts: Iterator[Post | bytes]) -> int:
    from crossfeed.ops.data.produce import produce

    return produce(posts, live.settings.kafka, progress=False, create_topics=False, linger_ms=0)


def _wait_rows(live: LivePipeline, ids: list[str], timeout_s: float) -> dict[str, float]:
    """When each post's rows became visible (one text row per post here)."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while len(seen) < len(ids) and time.monotonic() < deadline:
        live.check_alive()
        pending = [i for i in ids if i not in seen]
        for chunk in range(0, len(pending), 1000):
            counts = live.probe.rows_by_post(pending[chunk : chunk + 1000])
            now = time.monotonic()
            seen.update({pid: now for pid, n in counts.items() if n >= 1})
        time.sleep(0.05)
    return seen


def max_ingest_rate(live: LivePipeline, posts: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    burst = [_post(f"max-{i}-{uuid.uuid4().hex[:6]}", _filler_text(rng, i)) for i in range(posts)]
    t0 = time.monotonic()
    _produce(live, iter(burst))
    seen = _wait_rows(live, [p.id for p in burst], timeout_s=300)
    if len(seen) < len(burst):
        raise BenchError(f"only {len(seen)}/{len(burst)} burst posts were indexed")
    elapsed = max(seen.values()) - t0
    return {"posts": posts, "seconds": round(elapsed, 3), "posts_per_s": posts / elapsed}


# --------------------------------------------------------------------------- latency


class SseListener:
    """Reads one subscription's event stream in a thread; records when each post arrived."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.arrived: dict[str, float] = {}
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sse", daemon=True)

    def __enter__(self) -> SseListener:
        self._thread.start()
        if not self.ready.wait(30):
            raise BenchError(f"the event stream {self.url} did not open")
        return self

    def _run(self) -> None:
        import httpx

        with httpx.stream("GET", self.url, timeout=httpx.Timeout(5.0, read=60.0)) as r:
            for line in r.iter_lines():
                self.ready.set()
                if self._stop.is_set():
                    return
                if line.startswith("data:"):
                    data = json.loads(line[5:])
                    self.arrived.setdefault(str(data.get("post_id")), time.monotonic())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


def latency_run(
    live: LivePipeline,
    api_url: str,
    *,
    rate: float,
    duration_s: float,
    probe_every: int,
    label: str,
    seed: int,
) -> dict[str, Any]:
    import httpx

    nonce = uuid.uuid4().hex[:6]
    probe_text = f"volcano eruption report {nonce} #volcano"
    r = httpx.post(
        f"{api_url}/v1/subscriptions",
        json={"text": probe_text, "min_score": PROBE_MIN_SCORE, "name": f"bench {label}"},
        timeout=60,
    )
    if r.status_code != 201:
        raise BenchError(f"creating the probe subscription failed: {r.status_code} {r.text}")
    sub = r.json()
    rng = np.random.default_rng(seed)
    sent: dict[str, float] = {}
    total = max(1, int(rate * duration_s))

    def paced() -> Iterator[Post]:
        t0 = time.monotonic()
        for i in range(total):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if i % probe_every == probe_every // 2:
                pid = f"probe-{label}-{nonce}-{i}"
                sent[pid] = time.monotonic()
                # Each probe differs (a number): equal texts would be reposts, not embedded.
                yield _post(pid, f"{probe_text} {i}")
            else:
                yield _post(f"bg-{label}-{nonce}-{i}", _filler_text(rng, i))

    visible: dict[str, float] = {}
    producing = threading.Event()

    def watch_rows() -> None:  # polls while posts are being produced, not after
        while producing.is_set() or len(visible) < len(sent):
            pending = [p for p in list(sent) if p not in visible]
            if pending:
                counts = live.probe.rows_by_post(pending)
                now = time.monotonic()
                visible.update({p: now for p, n in counts.items() if n >= 1})
            if not producing.is_set() and time.monotonic() > deadline:
                return
            time.sleep(0.05)

    deadline = float("inf")
    producing.set()
    poller = threading.Thread(target=watch_rows, name="bench-rows", daemon=True)
    poller.start()
    with SseListener(f"{api_url}{sub['events_url']}") as sse:
        try:
            _produce(live, paced())
        finally:
            deadline = time.monotonic() + 60
            producing.clear()
        poller.join(timeout=90)
        deadline = time.monotonic() + 30
        while len(sse.arrived) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.05)
    searchable = [visible[p] - t for p, t in sent.items() if p in visible]
    pushed = [sse.arrived[p] - t for p, t in sent.items() if p in sse.arrived]
    httpx.delete(f"{api_url}/v1/subscriptions/{sub['id']}", timeout=30)
    return {
        "posts": total,
        "probes": len(sent),
        "searchable_s": _summary(searchable),
        "sse_s": _summary(pushed),
        "missed_sse": len(sent) - len(pushed),
        "unexpected_sse": len(set(sse.arrived) - set(sent)),
    }


def build_report(results: dict[str, Any], **parameters: Any) -> BenchReport:
    report = BenchReport(
        name="live",
        title="crossfeed live: standing queries at half the maximum ingest rate",
        parameters=parameters,
        results=results,
    )
    mx = results["max_ingest"]
    cost = results["index_cost"]
    t = Table(
        "Index stage with standing queries (rows/s, batches of 32, one run)",
        ["subscriptions", "rows/s mean", "± sd", "throughput vs none"],
    )
    t.add(0, cost["rows_per_s"]["without"]["mean"], cost["rows_per_s"]["without"]["sd"], 1.0)
    t.add(
        cost["subscriptions"],
        cost["rows_per_s"]["with"]["mean"],
        cost["rows_per_s"]["with"]["sd"],
        cost["throughput_ratio"],
    )
    report.tables.append(t)
    cpu = cost["cpu_ms_per_batch"]
    report.notes.append(
        f"Index stage CPU time of this process per batch (p50): {cpu['without']['p50']:.1f} ms "
        f"without, {cpu['with']['p50']:.1f} ms with {cost['subscriptions']:,} subscriptions."
    )
    report.notes.append(
        f"Index stage with subscriptions: {cost['matches_per_batch']:.1f} matches recorded "
        f"per batch; after the upsert it waited {cost['wait_after_upsert_ms'] or 0:.1f} ms "
        "per batch for the matching (run during the upsert) and the recording."
    )
    mc = results.get("match_cost")
    if mc:
        m = Table(
            f"Matching one batch of 32 against {mc['subscriptions']:,} subscriptions "
            "(ms, alternating)",
            ["what", "wall p50 ms", "wall mean ms", "CPU p50 ms"],
        )
        for key, label in (
            ("product_default", "plain float32 product, BLAS default threads (before)"),
            ("product_1", "plain float32 product, 1 BLAS thread"),
            (
                "percolator",
                "percolator.match (int8 pass + exact)" if mc["screened"] else "percolator.match",
            ),
        ):
            e = mc["ms_per_batch"][key]
            m.add(label, e["p50"], e["mean"], mc["cpu_ms_per_batch"][key]["p50"])
        report.tables.append(m)
    lat = Table(
        f"Latency at {results['rate_posts_per_s']:.1f} posts/s "
        f"(half the measured maximum {mx['posts_per_s']:.1f})",
        ["subscriptions", "probes", "searchable p50 s", "p95 s", "SSE p50 s", "p95 s", "missed"],
    )
    for n, run in results["latency"].items():
        lat.add(
            n,
            run["probes"],
            run["searchable_s"].get("p50"),
            run["searchable_s"].get("p95"),
            run["sse_s"].get("p50"),
            run["sse_s"].get("p95"),
            run["missed_sse"],
        )
    report.tables.append(lat)
    report.notes.append(
        "searchable = all rows of the post visible to an 'Eventually' Milvus read; "
        "SSE = the event received by an HTTP client of the API's event stream. "
        "Target: produce -> SSE p95 <= 2 s."
    )
    return report


def run_live_bench(base: Settings, out: Any, args: Any) -> BenchReport:
    """The whole bench on a private pipeline (removed afterwards); see the module doc."""
    from crossfeed.api.app import create_app
    from crossfeed.ops.bench.live import BenchNames, bench_settings, live_pipeline
    from crossfeed.ops.bench.query import ApiServer

    if args.subscriptions < 1 or args.burst < 10 or args.duration <= 0 or args.probe_every < 2:
        raise BenchError(
            "need --subscriptions >= 1, --burst >= 10, --duration > 0, --probe-every >= 2"
        )
    names = BenchNames.new()
    settings = bench_settings(base, names)
    settings.live = settings.live.model_copy(update={"lag_refresh_s": 0.0})
    results: dict[str, Any] = {}
    with live_pipeline(settings, names, out / "live-worker.log") as live:
        app = create_app(settings)
        with ApiServer(app) as api:
            state = app.state.crossfeed
            version = state.embedder.version
            log.info("API up in %.1f s; waiting for the worker", api.start_s or 0)
            warm = _post(f"warm-{uuid.uuid4().hex[:6]}", "warm up post #hello")
            _produce(live, iter([warm]))
            if not _wait_rows(live, [warm.id], timeout_s=600):
                raise BenchError("the worker indexed nothing within 600 s")
            results["worker_ready_s"] = round(time.monotonic() - live.started_at, 1)
            log.info("measuring the maximum ingest rate (%d posts)", args.burst)
            results["max_ingest"] = max_ingest_rate(live, args.burst, args.seed)
            rate = results["max_ingest"]["posts_per_s"] / 2
            results["rate_posts_per_s"] = rate
            results["latency"] = {}
            log.info("latency with 1 subscription at %.1f posts/s", rate)
            results["latency"]["1"] = latency_run(
                live,
                api.url,
                rate=rate,
                duration_s=args.duration,
                probe_every=args.probe_every,
                label="one",
                seed=args.seed,
            )
            log.info("storing %d subscriptions", args.subscriptions - 1)
            embedder = state.embedder
            add_filler_subscriptions(
                settings, filler_vectors(embedder, args.subscriptions - 1), version
            )
            rng = np.random.default_rng(args.seed + 2)
            texts = [_filler_text(rng, i) for i in range(256)]
            table = np.asarray(embedder.embed_texts(texts), dtype=np.float32)
            log.info("index-stage cost with %d subscriptions", args.subscriptions)
            results["index_cost"] = index_stage_cost(
                settings, texts, table, version, rounds=args.cost_rounds, batches=8
            )
            results["match_cost"] = match_cost(settings, texts, table, version)
            log.info("latency with %d subscriptions", args.subscriptions)
            results["latency"][str(args.subscriptions)] = latency_run(
                live,
                api.url,
                rate=rate,
                duration_s=args.duration,
                probe_every=args.probe_every,
                label="many",
                seed=args.seed + 1,
            )
    return build_report(
        results,
        burst=args.burst,
        subscriptions=args.subscriptions,
        duration_s=args.duration,
        probe_every=args.probe_every,
        cost_rounds=args.cost_rounds,
        model_version=base.encoder.model_version,
    )
