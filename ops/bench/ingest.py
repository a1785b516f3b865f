"""``crossfeed bench ingest``: rows indexed per second and freshness, end to end.

Posts go through the real pipeline: kafka-python producer -> broker -> one
``crossfeed worker`` process (normalize, embed, index) -> Milvus, on the run's
private topics and collection (see :mod:`crossfeed.ops.bench.live`).

Per-modality throughput is measured with **separate phases**, one after the other
on the same warm worker, because a mixed stream's batches interleave modalities
and its rows/s could not be split between them honestly:

* ``text``:  the corpus posts with their media removed (one text row each);
* ``image``: the picture posts with text and tags removed (one image row each);
* ``video``: the video posts with text and tags removed (one video row each).

A phase lasts from the first post handed to the producer until the row count of
the collection reaches its final value. Before the phases a warm-up (two full
posts) waits until the worker is loaded and has joined its group, which is
reported as ``worker_ready_s``.

Freshness is the time from handing a post to the producer until all its rows are
visible in Milvus (an "Eventually" read, i.e. what a search finds). It is measured
twice: ``freshness_idle_s`` sends held-out full posts (text + picture) one at a time
into the idle pipeline; ``latency_s`` of each phase samples posts of the bulk load,
so it includes the wait behind the posts sent before them. Its resolution is the
poll period, reported as ``poll_s``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from crossfeed.core.schema import Post
from crossfeed.ops.bench.corpus import expected_rows, modality, unique_posts
from crossfeed.ops.bench.live import LivePipeline
from crossfeed.ops.bench.report import BenchReport, Table, rate, ratio, summarize
from crossfeed.ops.exceptions import BenchError

log = logging.getLogger(__name__)

PHASES = ("text", "image", "video")


@dataclass
class _Tracked:
    sent: float
    expected: int
    seen: float | None = None


class FreshnessTracker:
    """Posts sent at known times; :meth:`poll` records when all their rows are visible."""

    def __init__(self) -> None:
        self.items: dict[str, _Tracked] = {}

    def add(self, post_id: str, expected: int, sent: float) -> None:
        self.items[post_id] = _Tracked(sent, expected)

    def pending(self) -> list[str]:
        return [pid for pid, t in self.items.items() if t.seen is None]

    def update(self, counts: dict[str, int], now: float) -> None:
        for pid, count in counts.items():
            item = self.items.get(pid)
            if item is not None and item.seen is None and count >= item.expected:
                item.seen = now

    def latencies(self) -> list[float]:
        return [t.seen - t.sent for t in self.items.values() if t.seen is not None]


def split_phases(posts: Sequence[Post], holdout: int) -> tuple[list[Post], dict[str, list[Post]]]:
    """``(held-out full picture posts, {phase: posts})``; phase posts get new ids.

    Posts the pipeline would drop (reposts of an earlier post, nothing left after
    cleaning) are left out, so every phase knows exactly how many rows to wait for.
    """
    seen: set[str] = set()
    held: list[Post] = []
    for post in posts:
        if len(held) < holdout and modality(post) == "image":
            held += unique_posts([post], seen)
    held_ids = {p.id for p in held}
    phases: dict[str, list[Post]] = {name: [] for name in PHASES}
    for post in posts:
        if post.id in held_ids:
            continue
        if post.text.strip() or post.tags:
            phases["text"].append(post.model_copy(update={"id": f"{post.id}-t", "media": []}))
        kind = modality(post)
        if kind in ("image", "video"):
            media_only = {"id": f"{post.id}-{kind[0]}", "text": "", "tags": []}
            phases[kind].append(post.model_copy(update=media_only))
    # Held-out posts' hashes stay in ``seen``: a phase post equal to one is a repost too.
    return held, {name: unique_posts(items, seen) for name, items in phases.items()}


def _feed(posts: Sequence[Post], tracker: FreshnessTracker, every: int) -> Iterator[Post]:
    """Yield posts to the producer, noting the send time of every ``every``-th one."""
    for i, post in enumerate(posts):
        if every and i % every == 0:
            tracker.add(post.id, expected_rows(post), time.monotonic())
        yield post


def _produce(live: LivePipeline, posts: Iterator[Post]) -> int:
    from crossfeed.ops.data.produce import produce

    return produce(posts, live.settings.kafka, progress=False, create_topics=False)


def run_phase(
    live: LivePipeline,
    label: str,
    posts: Sequence[Post],
    *,
    samples: int = 20,
    poll_s: float = 0.2,
    stall_s: float = 120.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Send ``posts``, wait until their rows are in; rows/s and sampled latencies.

    Gives up after ``stall_s`` without a new row (a worker problem, reported as fewer
    rows than expected). It is generous because the first rows of a phase can take
    a whole embedding batch: 32 videos are tens of seconds of CPU.
    """
    from tqdm import tqdm

    probe = live.probe
    before = probe.count(strong=True)
    expected = sum(expected_rows(p) for p in posts)
    tracker = FreshnessTracker()
    every = max(1, len(posts) // samples) if samples else 0
    t0 = time.monotonic()
    sent = _produce(live, _feed(posts, tracker, every))
    produce_s = time.monotonic() - t0
    rows, last_change, polls = 0, t0, 0
    t_poll = time.monotonic()
    with tqdm(total=expected, desc=f"ingest {label}", unit="row", disable=not progress) as bar:
        while True:
            live.check_alive()
            n = probe.count() - before
            tracker.update(probe.rows_by_post(tracker.pending()), time.monotonic())
            now, polls = time.monotonic(), polls + 1
            if n > rows:
                bar.update(n - rows)
                rows, last_change = n, now
            if rows >= expected and not tracker.pending():
                break
            if now - last_change > stall_s:
                log.warning(
                    "%s phase: %d of %d rows after %.0f s without progress; see %s",
                    label, rows, expected, stall_s, live.log_path,
                )  # fmt: skip
                break
            time.sleep(poll_s)
    seconds = last_change - t0
    lat = tracker.latencies()
    return {
        "posts": sent,
        "expected_rows": expected,
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rate(rows, seconds),
        "produce_s": produce_s,
        "poll_s": (time.monotonic() - t_poll) / max(polls, 1),
        "latency_s": summarize(lat) if lat else None,
        "latency_samples_s": lat,
    }


def wait_visible(
    live: LivePipeline, posts: Sequence[Post], *, timeout_s: float, poll_s: float = 0.05
) -> float | None:
    """Send ``posts``; seconds until all their rows are visible (None on timeout)."""
    tracker = FreshnessTracker()
    _produce(live, _feed(posts, tracker, 1))
    start = min(t.sent for t in tracker.items.values())
    while tracker.pending():
        live.check_alive()
        tracker.update(live.probe.rows_by_post(tracker.pending()), time.monotonic())
        if time.monotonic() - start > timeout_s:
            return None
        time.sleep(poll_s)
    return max(t.seen for t in tracker.items.values() if t.seen is not None) - start


def run_ingest(
    live: LivePipeline,
    posts: Sequence[Post],
    *,
    freshness_samples: int = 10,
    phase_samples: int = 20,
    ready_timeout_s: float = 600.0,
    progress: bool = True,
) -> tuple[dict[str, Any], list[str]]:
    """Warm-up, the three phases, idle freshness; returns (results, indexed post ids)."""
    from tqdm import tqdm

    held, phases = split_phases(posts, holdout=2 + freshness_samples)
    if len(held) < 2:
        raise BenchError("the corpus has too few picture posts for the warm-up")
    warm, fresh = held[:2], held[2:]
    waited = wait_visible(live, warm, timeout_s=ready_timeout_s, poll_s=0.5)
    if waited is None:
        raise BenchError(f"the worker indexed nothing within {ready_timeout_s:.0f} s")
    results: dict[str, Any] = {
        "names": {
            "collection": live.names.collection,
            "topics": f"{live.names.base}.*",
            "redis_prefix": live.names.redis_prefix,
        },
        "worker_ready_s": time.monotonic() - live.started_at,
    }
    results["phases"] = {}
    for name in PHASES:
        if phases[name]:
            results["phases"][name] = run_phase(
                live, name, phases[name], samples=phase_samples, progress=progress
            )
    done = results["phases"].values()
    total_rows = sum(p["rows"] for p in done)
    total_s = sum(p["seconds"] for p in done)
    results["overall"] = {
        "posts": sum(p["posts"] for p in done),
        "rows": total_rows,
        "expected_rows": sum(p["expected_rows"] for p in done),
        "seconds": total_s,
        "rows_per_s": rate(total_rows, total_s),
    }
    text_rate = results["phases"].get("text", {}).get("rows_per_s")
    results["ratios"] = {
        f"{m}_vs_text": ratio(results["phases"].get(m, {}).get("rows_per_s"), text_rate)
        for m in ("image", "video")
    }
    idle: list[float] = []
    for post in tqdm(fresh, desc="freshness", unit="post", disable=not progress):
        seconds = wait_visible(live, [post], timeout_s=60.0)
        if seconds is None:
            log.warning("post %s was not visible within 60 s", post.id)
        else:
            idle.append(seconds)
    results["freshness_idle_s"] = {
        "summary": summarize(idle) if idle else None,
        "samples": idle,
        "sent": len(fresh),
    }
    results["rows_in_collection"] = live.probe.count(strong=True)
    results["deadletters"] = count_deadletters(live)
    indexed = [p.id for p in phases["text"]]
    return results, indexed


def count_deadletters(live: LivePipeline, timeout_s: float = 3.0) -> int | None:
    """Messages on the run's dead-letter topic (None when it cannot be read)."""
    try:
        from kafka import KafkaConsumer

        from crossfeed.core.kafka import KafkaConnection

        consumer = KafkaConsumer(
            live.settings.kafka.topic_deadletter,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=int(timeout_s * 1000),
            **KafkaConnection(live.settings.kafka).kafka_python(),
        )
    except Exception as exc:
        log.warning("cannot read the dead-letter topic: %s", exc)
        return None
    try:
        return sum(1 for _ in consumer)
    finally:
        consumer.close()


def build_report(results: dict[str, Any], **parameters: Any) -> BenchReport:
    phases = results["phases"]
    table = Table(
        "Rows indexed per second, by modality (separate phases)",
        [
            "phase",
            "posts",
            "rows / expected",
            "seconds",
            "rows/s",
            "vs text",
            "latency p50 / p95 (s)",
        ],
    )
    for name, p in phases.items():
        lat = p["latency_s"]
        lat_cell = f"{lat['p50']:.2f} / {lat['p95']:.2f}" if lat else "-"
        rel = 1.0 if name == "text" else results["ratios"].get(f"{name}_vs_text")
        table.add(
            name,
            p["posts"],
            f"{p['rows']} / {p['expected_rows']}",
            p["seconds"],
            p["rows_per_s"],
            rel,
            lat_cell,
        )
    o = results["overall"]
    table.add(
        "all",
        o["posts"],
        f"{o['rows']} / {o['expected_rows']}",
        o["seconds"],
        o["rows_per_s"],
        None,
        "-",
    )
    fresh = results["freshness_idle_s"]
    s = fresh["summary"]
    freshness = Table(
        "Freshness: produce -> visible in Milvus, one post at a time into the idle pipeline (s)",
        ["posts seen / sent", "min", "p50", "p95", "max"],
        [
            [
                f"{len(fresh['samples'])} / {fresh['sent']}",
                *(s[k] if s else None for k in ("min", "p50", "p95", "max")),
            ]
        ],
    )
    other = Table(
        "Other",
        ["worker ready (s)", "rows in collection", "dead letters"],
        [[results["worker_ready_s"], results["rows_in_collection"], results["deadletters"]]],
    )
    notes = [
        "Phases run one after the other on one warm worker process: text-only posts, "
        "then picture-only posts, then video-only posts (text and tags removed), so "
        "each phase's rows/s is one modality's end-to-end throughput.",
        "A phase's time runs from the first post handed to the producer to the moment "
        "the collection's row count reached its final value.",
        "Latency p50/p95 within a phase is sampled from the bulk load and includes "
        "queueing behind earlier posts; freshness is measured on an idle pipeline.",
        "'worker ready' is from spawning the worker (model load, group join) until the "
        "warm-up posts were searchable.",
    ]
    return BenchReport(
        name="ingest",
        title="crossfeed bench: ingest",
        parameters=parameters,
        results=results,
        tables=[table, freshness, other],
        notes=notes,
    )
