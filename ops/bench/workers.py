"""``crossfeed bench workers``: several worker processes sharing one consumer group.

On a private pipeline (:mod:`crossfeed.ops.bench.live`: the run's own topics, consumer
group, collection and Redis prefix; real ``crossfeed worker`` processes with the served
models), in one run:

1. **one worker**: ``posts`` text posts through one worker; rows/s as the ingest bench
   measures a phase (:func:`crossfeed.ops.bench.ingest.run_phase`).
2. **two workers**: a second worker joins the same consumer group. Small warm-up rounds
   are sent until each worker's own ``/metrics`` shows it read posts in every stage (so
   each holds partitions of each topic), then the same number of new text posts: rows/s,
   and how the posts were split between the two workers.
3. **one of two killed**: ``kill_posts`` more text posts; when a quarter of their rows are
   in, the second worker gets SIGKILL. The first must take its partitions over and index
   the rest. Lost = produced but not indexed after ``settle_s`` without a new row;
   duplicated = a row id stored twice (counted as the fault suite counts them,
   :func:`delivery`).

Throughput is CPU-bound (MiniLM on the CPU): two workers are faster only when there are
free cores for the second one. On the shared 2-core development box they are not, so the
two-worker figure there shows the scale-out mechanics (partitions shared, handed over on
a crash, nothing lost), not a speed-up.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crossfeed.core.schema import Post
from crossfeed.core.settings import Settings
from crossfeed.ops.bench.ingest import run_phase, wait_visible
from crossfeed.ops.bench.live import LivePipeline, log_tail
from crossfeed.ops.bench.push import WORDS
from crossfeed.ops.bench.report import BenchReport, Table, free_port, ratio
from crossfeed.ops.exceptions import BenchError

log = logging.getLogger(__name__)

STAGES = ("normalize", "embed", "index")


def delivery(expected: Iterable[str], rows: Iterable[str]) -> dict[str, list[str]]:
    """What became of the ``expected`` row ids, given every row id found (a row stored
    twice listed twice): ``lost`` (never stored), ``duplicated`` (stored more than once)
    and ``unexpected`` (stored, not expected); each sorted."""
    want = set(expected)
    counts = Counter(rows)
    return {
        "lost": sorted(want - set(counts)),
        "duplicated": sorted(r for r, n in counts.items() if n > 1),
        "unexpected": sorted(set(counts) - want),
    }


def text_posts(label: str, count: int) -> list[Post]:
    """``count`` distinct text posts (one text row each; no two are reposts)."""
    nonce = uuid.uuid4().hex[:6]
    now = datetime.now(UTC)
    return [
        Post(
            id=f"{label}-{nonce}-{i}",
            source="bench",
            author=f"@bench{i % 50}",
            created_at=now,
            text=f"{WORDS[i % len(WORDS)]} and {WORDS[(7 * i) % len(WORDS)]} "
            f"#{WORDS[(3 * i) % len(WORDS)]} {label} {nonce} {i}",
        )
        for i in range(count)
    ]


def text_row_ids(posts: Iterable[Post]) -> list[str]:
    return [f"{p.id}:text:0" for p in posts]


def stage_counts(port: int, timeout_s: float = 5.0) -> dict[str, float]:
    """Posts each stage of the worker serving metrics on ``port`` has read so far."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s, trust_env=False)
    r.raise_for_status()
    counts = dict.fromkeys(STAGES, 0.0)
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            if sample.name == "crossfeed_posts_in_total":
                stage = sample.labels.get("stage", "")
                if stage in counts:
                    counts[stage] = sample.value
    return counts


class _Second:
    """The second worker process of the group, with its metrics port and log."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        from crossfeed.ops.bench.live import spawn_worker

        self.port = free_port()
        self.log_path = log_path
        self.proc = spawn_worker(
            settings, log_path, {"CROSSFEED_WORKER_METRICS_PORT": str(self.port)}
        )

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(
                f"the second bench worker exited with status {self.proc.returncode}; "
                f"log tail:\n{log_tail(self.log_path)}"
            )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        from crossfeed.ops.run.processes import stop_processes

        stop_processes([self.proc], timeout=30.0)


def wait_shared(
    live: LivePipeline, ports: list[int], second: _Second, timeout_s: float
) -> dict[str, Any]:
    """Send warm-up rounds (each waited for) until every worker read posts in each stage."""
    started = time.monotonic()
    rounds = 0
    while True:
        second.check_alive()
        if wait_visible(live, text_posts("share", 16), timeout_s=120.0, poll_s=0.1) is None:
            raise BenchError("warm-up posts were not indexed within 120 s")
        rounds += 1
        counts = []
        for port in ports:
            try:
                counts.append(stage_counts(port))
            except Exception as exc:  # the second worker may still be loading its models
                log.debug("metrics on port %d: %s", port, exc)
                counts.append(dict.fromkeys(STAGES, 0.0))
        if all(c[s] > 0 for c in counts for s in STAGES):
            return {"seconds": time.monotonic() - started, "rounds": rounds, "counts": counts}
        if time.monotonic() - started > timeout_s:
            raise BenchError(
                f"the two workers did not both read every stage within {timeout_s:.0f} s "
                f"(posts read per worker and stage: {counts}); log tail:\n"
                f"{log_tail(second.log_path)}"
            )
        time.sleep(1.0)


def kill_run(
    live: LivePipeline,
    second: _Second,
    posts: list[Post],
    *,
    kill_at: float = 0.25,
    settle_s: float = 120.0,
    poll_s: float = 0.2,
) -> dict[str, Any]:
    """Send ``posts``; SIGKILL the second worker once ``kill_at`` of their rows are in;
    wait until every row is in or ``settle_s`` passed without a new one; count."""
    from crossfeed.ops.data.produce import produce

    probe = live.probe
    before = probe.count(strong=True)
    want = len(posts)
    t0 = time.monotonic()
    produce(posts, live.settings.kafka, progress=False, create_topics=False)
    rows, last_change = 0, t0
    killed_at: int | None = None
    t_kill: float | None = None
    while True:
        live.check_alive()
        n = probe.count() - before
        now = time.monotonic()
        if n > rows:
            rows, last_change = n, now
        if t_kill is None and rows >= kill_at * want:
            if rows >= want:
                break  # done before the kill: reported below as not killed
            second.kill()
            killed_at, t_kill = rows, time.monotonic()
            last_change = t_kill
        if rows >= want:
            break
        if now - last_change > settle_s:
            log.warning("kill run: %d of %d rows, none new for %.0f s", rows, want, settle_s)
            break
        time.sleep(poll_s)
    done = time.monotonic()
    ids = [p.id for p in posts]
    time.sleep(2.0)  # late replays would show up as extra rows now
    found = probe.row_ids(ids, strong=True)
    counted = delivery(text_row_ids(posts), found)
    return {
        "posts": want,
        "killed": t_kill is not None,
        "rows_at_kill": killed_at,
        "seconds_kill_to_done": None if t_kill is None else done - t_kill,
        "seconds": done - t0,
        "rows": len(found),
        "lost": len(counted["lost"]),
        "duplicated": len(counted["duplicated"]),
        "unexpected": len(counted["unexpected"]),
        "lost_examples": counted["lost"][:5],
        "settle_s": settle_s,
    }


def run_workers_bench(
    base: Settings,
    out: Path,
    *,
    posts: int = 600,
    kill_posts: int = 1000,
    settle_s: float = 120.0,
    progress: bool = True,
) -> BenchReport:
    """The whole bench on a private pipeline (removed afterwards); see the module doc."""
    from crossfeed.encoders.runtime import cpu_thread_count
    from crossfeed.ops.bench.live import BenchNames, bench_settings, live_pipeline

    if posts < 20 or kill_posts < 40 or settle_s <= 0:
        raise BenchError("need --posts >= 20, --kill-posts >= 40 and --settle > 0")
    names = BenchNames.new()
    settings = bench_settings(base, names)
    if settings.kafka.partitions < 2:
        raise BenchError("two workers need at least 2 partitions (CROSSFEED_PARTITIONS)")
    settings.stream = settings.stream.model_copy(update={"metrics_port": free_port()})
    results: dict[str, Any] = {
        "collection": names.collection,
        "partitions": settings.kafka.partitions,
        "cpus": os.cpu_count(),
        "cpu_threads_per_worker": cpu_thread_count(settings.encoder.cpu_threads),
        "session_timeout_s": settings.kafka.session_timeout_s,
    }
    with live_pipeline(settings, names, out / "workers-0.log") as live:
        if wait_visible(live, text_posts("warm", 2), timeout_s=600.0, poll_s=0.5) is None:
            raise BenchError(f"the worker indexed nothing within 600 s; see {live.log_path}")
        results["worker_ready_s"] = time.monotonic() - live.started_at
        results["one_worker"] = run_phase(
            live, "1 worker", text_posts("one", posts), progress=progress
        )
        second = _Second(settings, out / "workers-1.log")
        try:
            ports = [settings.stream.metrics_port, second.port]
            results["shared"] = wait_shared(live, ports, second, timeout_s=600.0)
            start = [stage_counts(p) for p in ports]
            results["two_workers"] = run_phase(
                live, "2 workers", text_posts("two", posts), progress=progress
            )
            second.check_alive()
            end = [stage_counts(p) for p in ports]
            results["two_workers"]["posts_read"] = [
                {s: e[s] - b[s] for s in STAGES} for b, e in zip(start, end, strict=True)
            ]
            results["kill"] = kill_run(
                live, second, text_posts("kill", kill_posts), settle_s=settle_s
            )
        finally:
            second.stop()
    one, two = results["one_worker"]["rows_per_s"], results["two_workers"]["rows_per_s"]
    results["speedup"] = ratio(two, one)
    results["two_worker_lost"] = results["kill"]["lost"] if results["kill"]["killed"] else None
    return build_report(results, posts=posts, kill_posts=kill_posts, settle_s=settle_s)


def build_report(results: dict[str, Any], **parameters: Any) -> BenchReport:
    table = Table(
        "Text posts through 1 and 2 worker processes in one consumer group (one run)",
        ["workers", "posts", "rows / expected", "seconds", "rows/s", "vs 1 worker"],
    )
    for n, key in ((1, "one_worker"), (2, "two_workers")):
        p = results[key]
        rel = 1.0 if n == 1 else results["speedup"]
        rows = f"{p['rows']} / {p['expected_rows']}"
        table.add(n, p["posts"], rows, p["seconds"], p["rows_per_s"], rel)
    split = Table(
        "Posts each worker read in the 2-worker run, per stage",
        ["worker", *STAGES],
        [[i, *(c[s] for s in STAGES)] for i, c in enumerate(results["two_workers"]["posts_read"])],
    )
    k = results["kill"]
    kill = Table(
        "One of two workers killed (SIGKILL) mid-stream",
        ["posts", "rows at kill", "lost", "duplicated", "unexpected", "kill -> all in (s)"],
        [
            [
                k["posts"],
                k["rows_at_kill"],
                k["lost"],
                k["duplicated"],
                k["unexpected"],
                k["seconds_kill_to_done"],
            ]
        ],
    )
    notes = [
        f"{results['cpus']} CPU(s), {results['cpu_threads_per_worker']} encoder thread(s) per "
        f"worker, {results['partitions']} partitions per topic. Embedding is CPU-bound: a "
        "second worker adds throughput only when a core is free for it; on a box whose "
        "cores are already busy (see the load average) the 2-worker figure shows that the "
        "group shares the partitions, not a speed-up.",
        f"The second worker joined and both read posts in every stage after "
        f"{results['shared']['seconds']:.1f} s ({results['shared']['rounds']} warm-up rounds "
        "of 16 posts).",
        f"Kill: lost = posts produced but not indexed after {k['settle_s']:.0f} s without a "
        "new row; the consumer group hands the killed worker's partitions over after the "
        f"session timeout ({results['session_timeout_s']:g} s)."
        + ("" if k["killed"] else " The stream finished before the kill: no figure."),
    ]
    return BenchReport(
        name="workers",
        title="crossfeed bench: workers sharing a consumer group",
        parameters=parameters,
        results=results,
        tables=[table, split, kill],
        notes=notes,
    )
