"""The Redis side of live monitoring, on the real Redis: subscriptions, matches recorded
once, exact resume, trimming, deletion; activity, freshness and thumbnails."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from crossfeed.core.settings import LiveSettings, RedisSettings
from crossfeed.live.activity import ActivityPublisher, read_activity
from crossfeed.live.base import Match
from crossfeed.live.freshness import FreshnessRecorder, read_index_freshness
from crossfeed.live.percolator import Percolator
from crossfeed.live.redis_store import RedisSubscriptionFeed, RedisSubscriptionStore
from crossfeed.live.thumbs import Thumbnail, ThumbnailReader, ThumbnailWriter
from crossfeed.streams.metrics import WorkerMetrics

pytestmark = pytest.mark.integration

URL = RedisSettings().url.get_secret_value()


@pytest.fixture
def prefix(engines: object, unique_name: Any) -> Iterator[str]:
    name = unique_name("livetest")
    yield name
    client = redis.Redis.from_url(URL)
    keys = list(client.scan_iter(match=f"{name}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def _stores(
    prefix: str, maxlen: int = 10_000
) -> tuple[RedisSubscriptionStore, RedisSubscriptionFeed]:
    live = LiveSettings(CROSSFEED_EVENTS_MAXLEN=maxlen, CROSSFEED_SSE_HEARTBEAT_S=1)
    rs = RedisSettings(CROSSFEED_REDIS_PREFIX=prefix)
    return RedisSubscriptionStore.from_settings(rs, live), RedisSubscriptionFeed.from_settings(
        rs, live
    )


def _matches(sub_id: str, posts: list[str]) -> list[Match]:
    return [Match(sub_id, p, 0.9, {"post_id": p, "score": 0.9}) for p in posts]


async def test_matches_are_recorded_once_and_resume_exactly(prefix: str, make_sub: Any) -> None:
    store, feed = _stores(prefix)
    try:
        sub = make_sub("a" * 32, "cute cats")
        await store.create(sub, limit=10)
        v0 = feed.version()
        assert [s.id for s in feed.load()] == [sub.id]
        assert feed.record(_matches(sub.id, ["p1", "p2"])) == 2
        assert feed.record(_matches(sub.id, ["p2", "p3"])) == 1  # a replay records p2 no more
        events = await store.read_events(sub.id, "0", count=10, block_s=0)
        assert [e.data["post_id"] for e in events] == ["p1", "p2", "p3"]
        after = await store.read_events(sub.id, events[0].id, count=10, block_s=0)
        assert [e.data["post_id"] for e in after] == ["p2", "p3"]
        assert await store.last_event_id(sub.id) == events[-1].id
        # Blocking read: an event recorded while a reader waits reaches it at once.
        waiter = asyncio.create_task(store.read_events(sub.id, events[-1].id, count=5, block_s=5))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await asyncio.to_thread(feed.record, _matches(sub.id, ["p4"]))
        [late] = await waiter
        assert late.data["post_id"] == "p4" and time.monotonic() - started < 1.0
        assert await store.delete(sub.id) is True
        assert feed.version() > v0 and feed.load() == []
        # Matches of a deleted subscription are dropped, not recorded into a new stream.
        assert feed.record(_matches(sub.id, ["p9"])) == 0
        assert await store.read_events(sub.id, "0", count=10, block_s=0) == []
        client = redis.Redis.from_url(URL)
        assert list(client.scan_iter(match=f"{prefix}:live:{{{sub.id}}}:*")) == []
        client.close()
    finally:
        await store.aclose()
        feed.close()


async def test_event_streams_are_trimmed_to_their_retention(prefix: str, make_sub: Any) -> None:
    store, feed = _stores(prefix, maxlen=10)
    try:
        sub = make_sub("b" * 32, "x")
        await store.create(sub, limit=10)
        for start in range(0, 500, 50):
            feed.record(_matches(sub.id, [f"p{i}" for i in range(start, start + 50)]))
        kept = await store.read_events(sub.id, "0", count=1000, block_s=0)
        assert 10 <= len(kept) < 200  # MAXLEN ~ trims by whole nodes
        assert kept[-1].data["post_id"] == "p499"
    finally:
        await store.aclose()
        feed.close()


async def test_percolating_over_redis(prefix: str, make_sub: Any, make_row: Any) -> None:
    store, feed = _stores(prefix)
    try:
        await store.create(make_sub("c" * 32, "volcano eruption"), limit=10)
        perc = Percolator(feed)
        assert perc.percolate([make_row("v1", "volcano eruption"), make_row("x", "tax")]) == 1
        assert perc.percolate([make_row("v1", "volcano eruption")]) == 0
        [event] = await store.read_events("c" * 32, "0", count=5, block_s=0)
        assert event.data["post_id"] == "v1" and event.data["score"] > 0.99
    finally:
        await store.aclose()
        feed.close()


async def test_activity_freshness_and_thumbnails_roundtrip(prefix: str) -> None:
    metrics = WorkerMetrics(CollectorRegistry())
    client = redis.Redis.from_url(URL)
    pub = ActivityPublisher(metrics.registry, client, prefix)
    metrics.posts_in.labels(stage="embed").inc(30)
    metrics.posts_out.labels(stage="embed").inc(29)
    metrics.deadletter_reasons.labels(stage="decode", reason="media: too large").inc(2)
    assert pub.flush() == 3 and pub.flush() == 0  # deltas only
    aclient = aioredis.Redis.from_url(URL)
    try:
        act = await read_activity(aclient, prefix, now=time.time() + 1)
        assert act.rates["embed"] == {
            "in_per_s": 0.5,
            "out_per_s": pytest.approx(29 / 60, abs=1e-3),
        }
        assert act.series["embed"][-1] == 30
        assert act.deadletters == [{"stage": "decode", "reason": "media: too large", "count": 2}]

        rec = FreshnessRecorder(client, prefix, clock=lambda: 100.0)
        rec.record(newest_event_ms=5_000, oldest_produced_ms=97_500, rows=3, active_subscriptions=7)
        rec.record(newest_event_ms=4_000, oldest_produced_ms=None, rows=1)  # older event time
        f = await read_index_freshness(aclient, prefix)
        assert f.indexed_through_ms == 5_000 and f.index_lag_s == 2.5
        assert f.batch_rows == 1 and f.active_subscriptions == 7

        ThumbnailWriter(client, prefix, ttl_s=60).put([Thumbnail("p/1", 2, 1, b"jpeg")])
        reader = ThumbnailReader(aclient, prefix)
        assert await reader.get("p/1", 2, 1) == b"jpeg"
        assert await reader.get("p/1", 2) is None
        assert await reader.existing([("p/1", 2, 1), ("p/1", 1, None)]) == {("p/1", 2, 1)}
        assert 0 < client.ttl(f"{prefix}:thumb:p/1:2:m1") <= 60
    finally:
        await aclient.aclose()
        client.close()
