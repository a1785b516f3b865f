"""``crossfeed bench live``, part 2: what N standing queries cost the index stage.

**Filler subscriptions.** The N-1 subscriptions besides the probe are written straight
to the store (embedding 10,000 texts through the API would only measure the encoder),
but their vectors are real: the served model's embeddings of two-topic queries
("election laptop", "tennis museum"...; 780 texts, topics unrelated to the bench's
posts and probe), and every filler is a point between two of them (up to halfway,
re-normalised, like ``bench query --rows``), so the bank has the spectrum of real
queries, not of random vectors. Their ``min_score`` is drawn from 0.4-0.7: on these
vectors 0.3-0.6 made every bench post match ~15 of the 10,000 queries (each query firing
on ~1.5 per 1,000 posts); 0.4-0.7 gives ~0.35 per post.

**Rows.** The index stage runs in this process on batches of 32 records whose vectors
are the served model's embeddings of the bench's own post texts, with no and with N
subscriptions, alternating rounds.

**Micro-benchmark.** The matching of one batch of 32 alone, alternating: the plain
float32 product ``Q @ V.T`` and threshold with the BLAS library's default threads (what
the index stage ran before), the same with one BLAS thread, and the percolator's
``match`` (first pass, exact scores, filters, payloads); wall and CPU time (the calling
thread's, the whole process's for the multi-threaded product).
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np

from crossfeed.core.schema import VectorRecord
from crossfeed.core.settings import Settings
from crossfeed.ops.bench.report import ratio, summarize

TOPICS = [
    "election", "parliament", "stock market", "inflation", "interest rates", "startup",
    "smartphone", "laptop", "video game", "movie premiere", "album release", "tennis",
    "basketball", "marathon", "olympics", "vaccine", "hospital", "climate policy",
    "solar panels", "electric cars", "airline", "hotel", "recipe", "vegan food", "wine",
    "fashion week", "museum", "theatre", "poetry", "novel", "chess", "space launch",
    "telescope", "robot", "artificial intelligence", "cybersecurity", "cryptocurrency",
    "housing prices", "school", "university",
]  # fmt: skip
FILLER_MIN_SCORE = (0.4, 0.7)
BATCH = 32


def _summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    out: dict[str, Any] = dict(summarize(values))
    out["sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return out


def filler_vectors(embedder: Any, count: int, seed: int = 1) -> np.ndarray:
    """``count`` unit vectors between real embeddings of two-topic queries."""
    queries = [f"{a} {b}" for a, b in itertools.combinations(TOPICS, 2)]
    table = np.asarray(embedder.embed_texts(queries), dtype=np.float32)
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(table), count), rng.integers(0, len(table), count)
    mix = rng.uniform(0.0, 0.5, count).astype(np.float32)[:, None]
    vectors = (1 - mix) * table[a] + mix * table[b]
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def add_filler_subscriptions(settings: Settings, vectors: np.ndarray, version: str) -> None:
    """Write one subscription per row of ``vectors`` (min_score from FILLER_MIN_SCORE)."""
    from crossfeed.indexer.base import SearchFilter
    from crossfeed.live.base import Subscription
    from crossfeed.live.redis_store import RedisSubscriptionStore

    scores = np.random.default_rng(2).uniform(*FILLER_MIN_SCORE, len(vectors))

    async def run() -> None:
        store = RedisSubscriptionStore.from_settings(settings.redis, settings.live)
        try:
            for i, vec in enumerate(vectors):
                await store.create(
                    Subscription(
                        id=uuid.uuid4().hex,
                        name=f"filler {i}",
                        kind="text",
                        query=f"filler {i}",
                        min_score=float(scores[i]),
                        filter=SearchFilter(model_version=version),
                        filters={},
                        vector=vec,
                        model_version=version,
                        created_at_ms=int(time.time() * 1000),
                    ),
                    limit=10**9,
                )
        finally:
            await store.aclose()

    asyncio.run(run())


def _records(
    texts: list[str], table: np.ndarray, version: str, tag: str, rng: np.random.Generator
) -> list[bytes]:
    now = datetime.now(UTC)
    out = []
    for i, k in enumerate(rng.integers(0, len(texts), BATCH)):
        record = VectorRecord(
            post_id=f"cost-{tag}-{i}",
            item=0,
            modality="text",
            vector=table[k].tolist(),
            model_version=version,
            created_at=now,
            embedded_at=now,
            author="@bench",
            text=texts[k],
            tags=[],
            lang="en",
            media_ref=None,
        )
        out.append(record.model_dump_json().encode())
    return out


def _histogram(hist: Any) -> tuple[float, float]:
    """(sum, count) of a prometheus Histogram, through its public collect()."""
    total = count = 0.0
    for metric in hist.collect():
        for sample in metric.samples:
            if sample.name.endswith("_sum"):
                total = sample.value
            elif sample.name.endswith("_count"):
                count = sample.value
    return total, count


def index_stage_cost(
    settings: Settings,
    texts: list[str],
    table: np.ndarray,
    version: str,
    *,
    rounds: int,
    batches: int,
) -> dict[str, Any]:
    """rows/s of the index stage without and with the stored subscriptions (alternating).

    ``texts`` and ``table`` (their embeddings) are the posts the batches are drawn from.
    """
    from crossfeed.indexer.epoch import IndexEpoch
    from crossfeed.indexer.milvus import MilvusIndex
    from crossfeed.live.percolator import Percolator
    from crossfeed.live.redis_store import RedisSubscriptionFeed
    from crossfeed.streams.index import IndexStage
    from crossfeed.streams.metrics import WorkerMetrics
    from crossfeed.streams.testing import RecordingPublisher

    rng = np.random.default_rng(2)
    index = MilvusIndex(settings.milvus)
    epoch = IndexEpoch.from_settings(settings.redis)
    feed = RedisSubscriptionFeed.from_settings(settings.redis, settings.live)
    live = settings.live
    percolator = Percolator(
        feed, screen=live.percolator_screen, blas_threads=live.percolator_threads
    )
    metrics = {"without": WorkerMetrics(), "with": WorkerMetrics()}
    stages = {
        name: IndexStage(
            index=index,
            epoch=epoch,
            publisher=RecordingPublisher(),
            topics=settings.kafka,
            metrics=metrics[name],
            percolator=perc,
        )
        for name, perc in (("without", None), ("with", percolator))
    }
    seconds: dict[str, list[float]] = {"without": [], "with": []}
    cpu: dict[str, list[float]] = {"without": [], "with": []}  # the process's CPU time
    matched = 0
    try:
        percolator.refresh()
        asyncio.run(stages["without"].handle_batch(_records(texts, table, version, "warm", rng)))
        for r in range(rounds):
            order = ("without", "with") if r % 2 == 0 else ("with", "without")
            for name in order:
                data = [
                    _records(texts, table, version, f"{name}{r}b{b}", rng) for b in range(batches)
                ]
                t0, c0 = time.perf_counter(), time.process_time()
                for values in data:
                    matched += asyncio.run(stages[name].handle_batch(values)).matches
                seconds[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    finally:
        for stage in stages.values():
            stage.close()
        feed.close()
        epoch.close()
        index.close()
    rows_per_round = batches * BATCH
    rates = {k: [rows_per_round / s for s in v] for k, v in seconds.items()}
    mean = {k: float(np.mean(v)) for k, v in rates.items()}
    waited, batches_seen = _histogram(metrics["with"].percolate_seconds)
    return {
        "subscriptions": percolator.active,
        "screened": percolator.screened,
        "rows_per_round": rows_per_round,
        "rows_per_s": {k: _summary(v) for k, v in rates.items()},
        "throughput_ratio": ratio(mean["with"], mean["without"]),
        "cost_fraction": None if not mean["without"] else 1 - mean["with"] / mean["without"],
        # After the upsert: waiting for the matching that ran during it, plus recording.
        "wait_after_upsert_ms": 1000 * waited / batches_seen if batches_seen else None,
        # CPU time of this process per batch (all its threads): what the stage costs the
        # machine, less sensitive to other load than rows/s.
        "cpu_ms_per_batch": {k: _summary([1000 * c / batches for c in v]) for k, v in cpu.items()},
        "matches_per_batch": matched / max(1, rounds * batches),
    }


def match_cost(
    settings: Settings, texts: list[str], table: np.ndarray, version: str, *, repeats: int = 30
) -> dict[str, Any]:
    """ms to match one batch of 32 against the stored subscriptions: the plain float32
    product (library-default and one BLAS thread) and the percolator, alternating."""
    from threadpoolctl import ThreadpoolController

    from crossfeed.indexer.base import IndexRow
    from crossfeed.live.percolator import Percolator
    from crossfeed.live.redis_store import RedisSubscriptionFeed

    feed = RedisSubscriptionFeed.from_settings(settings.redis, settings.live)
    try:
        subs = [s for s in feed.load() if s.model_version == version]
        live = settings.live
        percolator = Percolator(
            feed, screen=live.percolator_screen, blas_threads=live.percolator_threads
        )
        percolator.refresh()
    finally:
        feed.close()
    matrix = np.stack([np.asarray(s.vector, dtype=np.float32) for s in subs])
    controller = ThreadpoolController()
    rng = np.random.default_rng(3)
    times: dict[str, list[float]] = {"product_default": [], "product_1": [], "percolator": []}
    cpu: dict[str, list[float]] = {k: [] for k in times}
    for rep in range(repeats):
        picks = rng.integers(0, len(texts), BATCH)
        vectors = table[picks]
        rows = [
            IndexRow(
                row_id=f"m{rep}-{i}:text:0",
                post_id=f"m{rep}-{i}",
                item=0,
                modality="text",
                vector=table[k].tolist(),
                created_at_ms=int(time.time() * 1000),
                author="@bench",
                text=texts[k],
                tags=(),
                lang="en",
                model_version=version,
                media_ref="",
            )
            for i, k in enumerate(picks)
        ]
        for name in times:
            # CPU: the calling thread's, except for the multi-threaded product (the process's)
            clock = time.process_time if name == "product_default" else time.thread_time
            t0, c0 = time.perf_counter(), clock()
            if name == "percolator":
                percolator.match(rows)
            elif name == "product_1":
                with controller.limit(limits=1, user_api="blas"):
                    _ = matrix @ vectors.T >= 0.5
            else:
                _ = matrix @ vectors.T >= 0.5
            times[name].append(1000 * (time.perf_counter() - t0))
            cpu[name].append(1000 * (clock() - c0))
    return {
        "subscriptions": len(subs),
        "screened": percolator.screened,
        "ms_per_batch": {k: _summary(v) for k, v in times.items()},
        "cpu_ms_per_batch": {k: _summary(v) for k, v in cpu.items()},
    }
