"""The demo fails loudly, naming the cause, when indexing stalls (it used to print `ready`)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from rich.console import Console

from crossfeed.core.settings import Settings
from crossfeed.ops.run import demo


class _Counting:
    def __init__(self, rows: list[int]) -> None:
        self._rows = rows

    def count(self) -> int:
        return self._rows[0]

    def close(self) -> None:
        pass


@pytest.fixture
def fake_index(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    import crossfeed.indexer.milvus as milvus

    rows = [0]
    monkeypatch.setattr(milvus, "MilvusIndex", lambda settings: _Counting(rows))
    monkeypatch.setattr(demo.time, "sleep", lambda s: None)
    return rows


def test_a_dead_worker_is_named(fake_index: list[int]) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    dead.wait()
    rows, _, why = demo._wait_indexed(Settings(), 10, Console(quiet=True), [dead])
    assert rows == 0 and why is not None and "exited with status 3" in why


def test_no_progress_is_a_stall_not_success(
    fake_index: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [0.0]

    def tick() -> float:
        clock[0] += 5.0
        return clock[0]

    monkeypatch.setattr(demo.time, "monotonic", tick)
    alive: Any = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        fake_index[0] = 4
        rows, _, why = demo._wait_indexed(Settings(), 10, Console(quiet=True), [alive])
    finally:
        alive.kill()
        alive.wait()
    assert rows == 4 and why is not None
    assert "no new rows" in why and "4 of 10" in why and "consumer group" in why


def test_complete_indexing_is_not_a_stall(
    fake_index: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [0.0]

    def tick() -> float:
        clock[0] += 1.0
        return clock[0]

    monkeypatch.setattr(demo.time, "monotonic", tick)
    fake_index[0] = 12  # moments add rows beyond the expected count
    rows, _, why = demo._wait_indexed(Settings(), 10, Console(quiet=True))
    assert rows == 12 and why is None
