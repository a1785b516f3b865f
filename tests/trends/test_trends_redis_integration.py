"""The tracker on the real Redis: several writers share counts and clusters, an API-side
tracker reads them, replays count once, every key has a TTL but the codebook's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis

from crossfeed.core.settings import RedisSettings, Settings
from crossfeed.trends.base import Observation
from crossfeed.trends.redis_store import RedisStore
from crossfeed.trends.tracker import StoreTracker, open_tracker

pytestmark = pytest.mark.integration

URL = RedisSettings().url.get_secret_value()
W = 60.0
T0 = 1_700_000_040.0


@pytest.fixture
def prefix(engines: object, unique_name: Any) -> Iterator[str]:
    name = unique_name("trendtest")
    yield name
    client = redis.Redis.from_url(URL)
    keys = list(client.scan_iter(match=f"{name}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def _tracker(prefix: str) -> StoreTracker:
    return open_tracker(Settings(), redis.Redis.from_url(URL), prefix=prefix)


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def test_two_workers_and_a_reader_share_one_state(prefix: str) -> None:
    a, b, api = _tracker(prefix), _tracker(prefix), _tracker(prefix)
    rng = np.random.default_rng(0)
    centers = [_unit(rng.normal(size=24)) for _ in range(4)]
    try:
        for w in range(20):  # background: 2 authors per tag, 4 topics, split across workers
            t = T0 + w * W
            posts = [
                Observation(
                    f"bg{w}-{i}",
                    f"u{w}-{i}",
                    t + i,
                    hashtags=(f"tag{i % 2}",),
                    vector=_unit(centers[i % 4] + rng.normal(scale=0.05, size=24)),
                    text=f"topic{i % 4} chatter",
                )
                for i in range(4)
            ]
            (a if w % 2 else b).observe(posts)
        t = T0 + 20 * W
        burst = [
            Observation(
                f"burst{i}",
                f"fan{i}",
                t + 1 + i,
                hashtags=("quake",),
                vector=_unit(centers[3] + rng.normal(scale=0.05, size=24)),
                text="the ground is shaking here",
            )
            for i in range(30)
        ]
        a.observe(burst[:20])
        b.observe(burst[10:])  # overlap: posts 10-19 seen by both workers
        a.observe(burst[:5])  # a replay
        reposts = [
            Observation(f"rp{i}", f"fan{i}", t + 40, hashtags=("quake",), duplicate_of="burst0")
            for i in range(5)
        ]  # the same authors again: no new attention
        b.observe(reposts)

        w20 = int(t // W)
        counts = api.store.counts([w20])[0]
        assert counts["h:quake"] == 30
        found = {v.id: v for v in api.current(now=t + 59)}
        assert "h:quake" in found
        clusters = [v for v in found.values() if v.kind == "cluster"]
        assert len(clusters) == 1 and clusters[0].rate == 30
        assert "shaking" in clusters[0].label or "ground" in clusters[0].label
        assert set(api.member_ids(clusters[0].id)) >= {f"burst{i}" for i in range(30)}
        assert api.get("h:quake") is not None and api.get("h:nothing") is None

        # one codebook: both workers put the same topic in the same cluster
        ids_a = a.store.cluster_of([f"burst{i}" for i in range(10)])
        ids_b = b.store.cluster_of([f"burst{i}" for i in range(20, 30)])
        assert len(set(ids_a.values()) | set(ids_b.values())) == 1
    finally:
        for t_ in (a, b, api):
            t_.close()


def test_every_key_expires(prefix: str) -> None:
    tracker = _tracker(prefix)
    try:
        tracker.observe(
            [
                Observation(
                    "p1", "al", T0, hashtags=("x",), vector=_unit(np.ones(8)), text="hi there"
                ),
                Observation("p2", "bo", T0 + 1, duplicate_of="p1", hashtags=("x",)),
            ]
        )
        tracker.current(now=T0 + 1)
        assert isinstance(tracker.store, RedisStore)
        client = tracker.store.r
        keys = [k.decode() for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        assert keys
        state = {f"{prefix}:cb", f"{prefix}:cb:ver", f"{prefix}:wm", f"{prefix}:first"}
        assert state <= set(keys)
        for key in keys:
            limit = tracker.store.state_ttl_s if key in state else tracker.params.ttl_s
            assert 0 < client.ttl(key) <= limit, key
    finally:
        tracker.close()
