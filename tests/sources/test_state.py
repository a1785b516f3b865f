"""Cursor and status files, and how ``crossfeed status`` shows a connector."""

from __future__ import annotations

import os
import time
from pathlib import Path

from crossfeed.sources.state import (
    CursorStore,
    SourceStatus,
    endpoint_key,
    read_statuses,
    sources_dir,
    write_status,
)


def _status(**kw: object) -> SourceStatus:
    now = time.time()
    base: dict[str, object] = dict(
        source="bluesky",
        endpoint="wss://js.example/subscribe",
        pid=os.getpid(),
        started_at=now - 60,
        updated_at=now,
        connected=True,
        last_event_at=now - 2.5,
        counts={"post": 120, "delete": 3},
        metrics_url="http://127.0.0.1:9999/metrics",
    )
    base.update(kw)
    return SourceStatus(**base)  # type: ignore[arg-type]


def test_cursor_round_trip_and_atomic_replace(tmp_path: Path) -> None:
    store = CursorStore(tmp_path / "x" / "c.json")
    assert store.load() is None
    store.save(1732000000400000)
    store.save(1732000000800000)
    assert store.load() == 1732000000800000
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["c.json"]  # no temp files left


def test_running_connector_line() -> None:
    line = _status().line()
    assert "bluesky" in line and f"running (pid {os.getpid()})" in line
    assert "connected" in line and "last event 2.5 s ago" in line and "120 posts" in line
    assert "http://127.0.0.1:9999/metrics" in line


def test_stopped_or_vanished_connectors_read_as_stopped() -> None:
    now = time.time()
    stopped = _status(running=False, stopped_reason="stopped", updated_at=now - 120)
    assert "stopped 2 min ago (stopped)" in stopped.line(now)
    gone = _status(pid=2**22 + 12345)  # no such process
    assert not gone.alive() and "stopped" in gone.line()
    silent = _status(updated_at=now - 60)  # its process exists but it stopped writing
    assert not silent.alive(now)


def test_status_files_are_listed_newest_first(tmp_path: Path) -> None:
    folder = sources_dir(tmp_path)
    write_status(folder / f"{endpoint_key('bluesky', 'a')}.status.json", _status(updated_at=1.0))
    write_status(
        folder / f"{endpoint_key('mastodon', 'b')}.status.json", _status(source="mastodon")
    )
    (folder / "junk.status.json").write_text("{not json")
    (folder / "other.status.json").write_text('{"unexpected": 1}')
    assert [s.source for s in read_statuses(tmp_path)] == ["mastodon", "bluesky"]
    assert read_statuses(tmp_path / "nothing-here") == []
    assert endpoint_key("bluesky", "a") != endpoint_key("bluesky", "b")
