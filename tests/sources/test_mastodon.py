"""The Mastodon connector against a local replay of the streaming API (server-sent events
over real HTTP on 127.0.0.1): discovery, token, drops, catch-up, stalls, heartbeats."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from crossfeed.sources.exceptions import SourceConfigError, SourceRefusedError
from crossfeed.sources.mastodon import MastodonConnector
from crossfeed.sources.metrics import SourceMetrics
from crossfeed.sources.state import CursorStore
from crossfeed.sources.testing import RecordingSink

POSTS = 20  # updates and edits in the session that are posts
BASE = 113500000000000000
FAST = {"wait_initial_s": 0.02, "wait_max_s": 0.1, "flush_interval_s": 0.05}


async def until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.02)


def _sid(n: int) -> str:
    return str(BASE + n)


async def test_session_with_a_drop_catch_up_and_a_stall(
    mastodon: Callable[..., Any], token: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="crossfeed.sources")
    replay, url = mastodon(
        [
            [("send", 12, 50), ("offline", 3), ("drop",)],
            [("send", 5, 100), ("quiet", 0.6), ("pause", 1.0)],
        ]
    )
    sink = RecordingSink()
    metrics = SourceMetrics()
    store = CursorStore(tmp_path / "cursor.json")
    connector = MastodonConnector(
        sink,
        url=url,
        token=SecretStr(token),
        metrics=metrics,
        cursor_store=store,
        heartbeat_timeout_s=0.5,
        quiet_warn_s=0.3,
        **FAST,
    )
    stop = asyncio.Event()
    run = asyncio.create_task(connector.run(stop))
    await until(lambda: len(sink.posts()) >= POSTS)
    await asyncio.sleep(0.3)
    stop.set()
    report = await run

    ids = [p.id.rsplit(":", 1)[1] for p in sink.posts()]
    assert len(ids) == POSTS
    assert ids[:4] == [_sid(1), _sid(2), _sid(3), _sid(2)]  # the last one is the edit
    assert ids[4:] == [_sid(n) for n in range(6, 22)]  # 6-8 caught up from the timeline
    assert sink.tombstones() == [f"mastodon:{url.split('//')[1]}:{_sid(1)}"]
    assert [d.reason.split(":")[0] for d in sink.deadletters()] == ["mastodon", "mastodon"]
    assert report.counts["skipped"] == 3  # a notification, a boost, filters_changed
    # At least the three published while disconnected; a catch-up that overlaps what the
    # stream then sends is dropped there (each status once in the sink, checked above).
    assert report.counts["caught_up"] >= 3
    # Three connections: after the drop, after the stall (no byte for 0.5 s).
    assert len(replay.streams) == 3
    assert [q["min_id"] for q in replay.timeline_queries] == [_sid(5), _sid(12)]
    assert store.load() == _sid(21)
    heartbeats = metrics.registry.get_sample_value(
        "crossfeed_source_events_total", {"source": "mastodon", "kind": "heartbeat"}
    )
    assert heartbeats and heartbeats >= 3
    warnings = [r.message for r in caplog.records if r.levelname == "WARNING"]
    assert any("stream dropped" in m for m in warnings)
    assert any("no event from" in m for m in warnings)  # the stall, not the heartbeats
    assert not any("token" in m.lower() and token in m for m in warnings)


async def test_discovered_streaming_host_and_hashtag_stream(
    mastodon: Callable[..., Any], token: str
) -> None:
    replay, url = mastodon(streaming_elsewhere=True)
    sink = RecordingSink()
    connector = MastodonConnector(
        sink, url=url, token=SecretStr(token), tag="#cats", local=True, **FAST
    )
    stop = asyncio.Event()
    run = asyncio.create_task(connector.run(stop))
    await until(lambda: len(sink.posts()) >= POSTS)
    stop.set()
    await run
    [stream] = replay.streams
    assert stream["path"] == "/api/v1/streaming/hashtag/local"
    assert stream["params"] == {"tag": "cats"}
    assert str(stream["port"]) != url.rsplit(":", 1)[1]  # the advertised streaming server
    assert connector.streaming_url == replay.streaming_url.replace("ws://", "http://")


async def test_restart_catches_up_from_the_saved_cursor(
    mastodon: Callable[..., Any], token: str, tmp_path: Path
) -> None:
    replay, url = mastodon([[("offline", 31), ("close",)]])  # all published, none streamed
    store = CursorStore(tmp_path / "cursor.json")
    store.save(_sid(15))
    sink = RecordingSink()
    connector = MastodonConnector(sink, url=url, token=SecretStr(token), cursor_store=store, **FAST)
    stop = asyncio.Event()
    run = asyncio.create_task(connector.run(stop))
    await until(lambda: len(sink.posts()) >= 6)
    stop.set()
    await run
    assert [p.id.rsplit(":", 1)[1] for p in sink.posts()] == [_sid(n) for n in range(16, 22)]
    assert replay.timeline_queries[0]["min_id"] == _sid(15)


async def test_a_bad_token_stops_the_connector(mastodon: Callable[..., Any]) -> None:
    _, url = mastodon()
    connector = MastodonConnector(RecordingSink(), url=url, token=SecretStr("wrong"), **FAST)
    with pytest.raises(SourceRefusedError, match="401") as err:
        await connector.run()
    assert "wrong" not in str(err.value)


def test_options_are_checked() -> None:
    good = SecretStr("t")
    for kwargs in (
        {"url": "http://social.example", "token": good},  # a token in clear text
        {"url": "ftp://social.example", "token": good},
        {"url": "https://social.example?x=1", "token": good},
        {"url": "https://social.example", "token": SecretStr(" ")},
        {"url": "https://social.example", "token": good, "tag": "#"},
        {"url": "https://social.example", "token": good, "tag": "cats", "only_media": True},
    ):
        with pytest.raises(SourceConfigError):
            MastodonConnector(RecordingSink(), **kwargs)  # type: ignore[arg-type]
    MastodonConnector(RecordingSink(), url="http://social.example", token=good, allow_insecure=True)
