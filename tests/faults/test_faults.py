"""Jepsen-style fault runs against real engines: workers killed, Milvus killed, a partner
worker lost. Each prints its figure. Run: ``pytest -m fault -s tests/faults``."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import pytest

from crossfeed.ops.bench.workers import delivery

pytestmark = [pytest.mark.fault, pytest.mark.integration, pytest.mark.slow]


def _text_rows(ids: list[str]) -> set[str]:
    return {f"{i}:text:0" for i in ids}


def _check(d: Any, name: str, expected: set[str], rows: list[str], **extra: object) -> None:
    counted = delivery(expected, rows)  # counted as `crossfeed bench workers` counts them
    lost, duplicated, unexpected = counted["lost"], counted["duplicated"], counted["unexpected"]
    d.report(
        name,
        posts=len(expected),
        rows=len(rows),
        lost=len(lost),
        duplicated=len(duplicated),
        unexpected=len(unexpected),
        **extra,
    )
    assert not lost, f"{len(lost)} lost, e.g. {lost[:5]}\n{d.logs()}"
    assert not duplicated and not unexpected, (duplicated[:5], unexpected[:5])


def test_a_worker_killed_five_times_loses_and_duplicates_nothing(deployment: Any) -> None:
    d = deployment
    ids = d.produce(5000)
    expected = _text_rows(ids)
    worker = d.start_worker()
    kills, seen = 0, [0]
    started = time.monotonic()
    while kills < 5:
        seen.append(d.wait_growth(seen[-1], by=150))  # the restarted worker is indexing
        if seen[-1] >= len(expected):
            break  # done before the fifth kill: the run proves less, so fail below
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        kills += 1
        worker = d.start_worker()
    rows = d.wait_rows(expected, timeout_s=300)
    _check(
        d,
        "worker kill -9 x5",
        expected,
        rows,
        kills=kills,
        rows_at_kills=seen,
        seconds=round(time.monotonic() - started, 1),
    )
    assert kills == 5, f"the stream finished after {kills} kills; rows seen {seen}"


def test_two_workers_one_killed_the_other_takes_its_partitions(deployment: Any) -> None:
    d = deployment
    first, second = d.start_worker(), d.start_worker()
    time.sleep(8.0)  # both in the group, partitions shared
    ids = d.produce(3000)
    expected = _text_rows(ids)
    at_kill = d.wait_growth(0, by=300)  # both are indexing
    first.send_signal(signal.SIGKILL)
    first.wait()
    rows = d.wait_rows(expected, timeout_s=300)
    assert second.poll() is None, d.logs()
    _check(d, "two workers, one kill -9", expected, rows, rows_at_kill=at_kill)
    assert at_kill < len(expected), "the kill came after the stream was done"


def test_milvus_killed_and_restarted_mid_stream_loses_nothing(deployment: Any) -> None:
    """Workers stop acknowledging while Milvus is gone, retry, and finish once it is back."""
    d = deployment
    worker = d.start_worker()
    ids: list[str] = []
    producer = threading.Thread(target=lambda: ids.extend(d.produce(3000, per_s=150.0)))
    producer.start()
    at_kill = d.wait_growth(0, by=300)
    d.kill_engine("milvus")
    time.sleep(5.0)
    restart_s = d.restart_engine("milvus")
    producer.join()
    expected = _text_rows(ids)
    rows = d.wait_rows(expected, timeout_s=300)
    assert worker.poll() is None, d.logs()
    _check(
        d,
        "milvus kill -9 + restart",
        expected,
        rows,
        rows_at_kill=at_kill,
        milvus_restart_s=round(restart_s, 1),
    )
    assert 0 < at_kill < len(expected)
