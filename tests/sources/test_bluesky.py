"""The Bluesky connector against a local Jetstream replay (real WebSocket on 127.0.0.1),
producing into a recording sink: reconnects, cursors, duplicates, deletes, bad frames,
rate changes, liveness."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crossfeed.sources.bluesky import BlueskyConnector, subscribe_url
from crossfeed.sources.exceptions import SourceConfigError, SourceRefusedError
from crossfeed.sources.metrics import SourceMetrics
from crossfeed.sources.state import CursorStore, read_json
from crossfeed.sources.testing import RecordingSink

POSTS = 25  # post creates and updates in the session
FAST = {"wait_initial_s": 0.02, "wait_max_s": 0.1, "flush_interval_s": 0.05}


async def until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.02)


def _time(frame: str) -> int:
    data = json.loads(frame)
    return int(data.get("payload", data)["time_us"])


async def test_session_with_drops_rewinds_and_a_quiet_spell(
    jetstream: Callable[..., Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="crossfeed.sources")
    server = jetstream(
        [
            [("send", 6, 50), ("drop",)],
            [("send", 11, 100), ("pause", 0.8), ("send", 4, 200), ("close",)],
        ]
    )
    frames = server.frames
    sink = RecordingSink()
    metrics = SourceMetrics()
    store = CursorStore(tmp_path / "cursor.json")
    connector = BlueskyConnector(
        sink,
        url=server.url,
        rewind_s=1.0,
        metrics=metrics,
        cursor_store=store,
        status_path=tmp_path / "status.json",
        quiet_warn_s=0.3,
        **FAST,
    )
    stop = asyncio.Event()
    run = asyncio.create_task(connector.run(stop))
    await until(lambda: len(sink.posts()) >= POSTS)
    await asyncio.sleep(0.2)  # anything more would be a duplicate
    stop.set()
    report = await run

    posts = sink.posts()
    ids = [p.id for p in posts]
    assert len(posts) == POSTS
    # Every post once, in order; the edit of post 2 is its second version.
    edited = ids[1]
    assert ids.count(edited) == 2 and len(set(ids)) == POSTS - 1
    assert posts[-1].text.startswith("post number 25")
    assert sink.tombstones() == [ids[0]]  # the delete of the first post
    letters = sink.deadletters()
    assert [d.stage for d in letters] == ["parse", "parse"]
    assert "not JSON" in letters[0].reason and "rkey" in letters[1].reason
    assert report.counts["skipped"] == 4  # identity, account, a like, an empty post
    # Reconnections asked to rewind 1 s before the last event read; replays were dropped.
    last = _time(frames[5]), _time(frames[17])
    assert server.cursors() == [None, last[0] - 1_000_000, last[1] - 1_000_000]
    assert report.counts["duplicate"] == 6
    assert server.requests[0]["wantedCollections"] == ["app.bsky.feed.post"]
    # The cursor on disk covers everything produced; the status says stopped.
    assert store.load() == _time(frames[-1])
    status = read_json(tmp_path / "status.json")
    assert status and status["running"] is False and status["counts"]["post"] == POSTS
    # The 0.8 s silence (threshold 0.3 s) was noticed, and its end too.
    assert any("no event from" in r.message for r in caplog.records if r.levelname == "WARNING")
    assert any("arriving again" in r.message for r in caplog.records)
    reconnects = metrics.registry.get_sample_value(
        "crossfeed_source_reconnects_total", {"source": "bluesky"}
    )
    assert reconnects == 2


async def test_restart_resumes_from_the_saved_cursor(
    jetstream: Callable[..., Any], tmp_path: Path
) -> None:
    server = jetstream()
    frames = server.frames
    store = CursorStore(tmp_path / "cursor.json")
    store.save(_time(frames[20]))
    sink = RecordingSink()
    connector = BlueskyConnector(sink, url=server.url, rewind_s=0.5, cursor_store=store, **FAST)
    stop = asyncio.Event()
    run = asyncio.create_task(connector.run(stop))
    await until(lambda: bool(sink.posts()) and sink.posts()[-1].text.startswith("post number 25"))
    stop.set()
    await run
    assert server.cursors() == [_time(frames[20]) - 500_000]
    # From frame 19 on (0.4 s before the cursor): at least once, never earlier.
    assert [p.text.split()[2] for p in sink.posts()] == [str(n) for n in range(13, 26)]


async def test_liveness_gauge_and_status_while_connected(
    jetstream: Callable[..., Any], tmp_path: Path
) -> None:
    server = jetstream([[("send", 3, None)]])  # then stays open, silent
    metrics = SourceMetrics()
    connector = BlueskyConnector(
        RecordingSink(),
        url=server.url,
        metrics=metrics,
        status_path=tmp_path / "status.json",
        status_interval_s=0.05,
        **FAST,
    )
    stop = asyncio.Event()
    run = asyncio.create_task(connector.run(stop))
    await until(lambda: connector.counts.get("post", 0) == 2)
    await asyncio.sleep(0.4)

    def gauge(name: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"source": "bluesky"})

    assert gauge("crossfeed_source_seconds_since_event") >= 0.3  # type: ignore[operator]
    assert gauge("crossfeed_source_connected") == 1
    status = read_json(tmp_path / "status.json")
    assert status and status["running"] and status["connected"] and status["last_event_at"]
    stop.set()
    await run
    assert gauge("crossfeed_source_connected") == 0


async def test_refused_subscription_stops_and_503_is_retried(
    jetstream: Callable[..., Any],
) -> None:
    refused = jetstream(reject=[400])
    with pytest.raises(SourceRefusedError, match="HTTP 400"):
        await BlueskyConnector(RecordingSink(), url=refused.url, **FAST).run()
    busy = jetstream(reject=[503, 503])
    sink = RecordingSink()
    connector = BlueskyConnector(sink, url=busy.url, **FAST)
    stop = asyncio.Event()
    run = asyncio.create_task(connector.run(stop))
    await until(lambda: len(sink.posts()) >= POSTS)
    stop.set()
    await run
    assert busy.handshakes == 3


def test_urls_are_checked_and_queries_kept() -> None:
    url = subscribe_url(
        "wss://js.example/subscribe?compress=false", cursor_us=42, dids=["did:plc:a"]
    )
    assert url == (
        "wss://js.example/subscribe?compress=false&wantedCollections=app.bsky.feed.post"
        "&wantedDids=did%3Aplc%3Aa&maxMessageSizeBytes=1000000&cursor=42"
    )
    for bad in ("https://js.example/subscribe", "ws://user:pw@js.example/", "wss:///x"):
        with pytest.raises(SourceConfigError):
            BlueskyConnector(RecordingSink(), url=bad)
