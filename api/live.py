"""The API's live-monitoring services: subscriptions, thumbnails, freshness, activity.

:class:`LiveServices` is built in the app's lifespan from settings (Redis) unless a
test injects one (:meth:`LiveServices.memory`). Freshness on every answer combines
what index workers recorded in Redis with per-stage consumer lag that a
:class:`LagMonitor` re-reads from the broker in the background (a search never
waits on the broker).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import redis
import redis.asyncio as aioredis

from crossfeed.api.live_models import CollectionStats
from crossfeed.api.models import Freshness, StageLagModel
from crossfeed.core.settings import KafkaSettings, Settings
from crossfeed.live.activity import Activity, read_activity
from crossfeed.live.base import SubscriptionStore
from crossfeed.live.freshness import IndexFreshness, read_index_freshness
from crossfeed.live.keys import LiveKeys
from crossfeed.live.lag import StageLag, measure_lag, stage_topics
from crossfeed.live.memory import MemorySubscriptions
from crossfeed.live.thumbs import ThumbnailReader

log = logging.getLogger(__name__)


class LagMonitor:
    """Per-stage consumer lag, re-measured at most every ``refresh_s`` in a daemon thread.

    :meth:`snapshot` returns at once with the last measurement (and starts a new one
    when it is stale); ``refresh_s`` <= 0 turns measuring off.
    """

    def __init__(
        self,
        measure: Callable[[], list[StageLag]] | None,
        refresh_s: float,
        stages: dict[str, str] | None = None,
    ) -> None:
        self._measure = measure
        self._refresh_s = refresh_s
        self._lock = threading.Lock()
        self._running = False
        self._at: float | None = None
        self._stages = stages or {}
        self._latest: list[StageLag] = [
            StageLag(s, t, None, "not measured yet") for s, t in self._stages.items()
        ]

    @classmethod
    def off(cls, stages: dict[str, str]) -> LagMonitor:
        monitor = cls(None, 0, stages)
        monitor._latest = [StageLag(s, t, None, "lag measuring is off") for s, t in stages.items()]
        return monitor

    @classmethod
    def from_settings(cls, settings: Settings) -> LagMonitor:
        kafka, group = settings.kafka, settings.stream.app_id
        stages = stage_topics(kafka)
        if settings.live.lag_refresh_s <= 0:
            return cls.off(stages)
        return cls(lambda: measure_lag(kafka, group), settings.live.lag_refresh_s, stages)

    def _run(self) -> None:
        assert self._measure is not None
        try:
            result = self._measure()
        except Exception as exc:  # the broker is down or refuses: say so, keep serving
            log.debug("consumer lag measurement failed: %s", exc)
            result = [
                StageLag(s, t, None, f"broker unavailable: {exc}") for s, t in self._stages.items()
            ]
        with self._lock:
            self._latest, self._at, self._running = result, time.time(), False

    def snapshot(self) -> tuple[list[StageLag], float | None]:
        with self._lock:
            latest, at = list(self._latest), self._at
            stale = at is None or time.time() - at >= self._refresh_s
            start = self._measure is not None and stale and not self._running
            if start:
                self._running = True
        if start:
            threading.Thread(target=self._run, name="crossfeed-lag", daemon=True).start()
        return latest, at


COLLECTIONS_REFRESH_S = 15.0  # rows per collection cost Milvus calls: re-read this often
LIST_TIMEOUT_S = 4.0
CollectionLister = Callable[[], list[tuple[str, int | None, bool]]]


class CollectionsCache:
    """Rows per collection, re-read at most every ``COLLECTIONS_REFRESH_S`` seconds."""

    def __init__(self, lister: CollectionLister) -> None:
        self._lister = lister
        self._at = 0.0
        self._value: list[CollectionStats] = []
        self._lock = asyncio.Lock()

    async def get(self) -> list[CollectionStats]:
        async with self._lock:
            if time.monotonic() - self._at >= COLLECTIONS_REFRESH_S:
                try:
                    with anyio.fail_after(LIST_TIMEOUT_S):
                        rows = await anyio.to_thread.run_sync(self._lister, abandon_on_cancel=True)
                    self._value = [CollectionStats(name=n, rows=r, serving=s) for n, r, s in rows]
                except Exception as exc:  # stats must answer while Milvus is down
                    log.debug("listing collections failed: %s", exc)
                self._at = time.monotonic()
            return list(self._value)


@dataclass
class LiveServices:
    subscriptions: SubscriptionStore
    thumbnails: ThumbnailReader | None = None
    redis: aioredis.Redis | None = None  # freshness and activity reads
    prefix: str = "crossfeed"
    lag: LagMonitor = field(default_factory=lambda: LagMonitor(None, 0))
    owned: bool = False  # built by the app (closed by it) rather than injected
    reposts: dict[str, str] = field(default_factory=dict)  # without Redis: repost -> original

    @classmethod
    def from_settings(cls, settings: Settings) -> LiveServices:
        from crossfeed.live.redis_store import RedisSubscriptionStore

        url = settings.redis.url.get_secret_value()
        client = aioredis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        return cls(
            subscriptions=RedisSubscriptionStore.from_settings(settings.redis, settings.live),
            thumbnails=ThumbnailReader(client, settings.redis.key_prefix),
            redis=client,
            prefix=settings.redis.key_prefix,
            lag=LagMonitor.from_settings(settings),
            owned=True,
        )

    @classmethod
    def memory(cls, store: MemorySubscriptions | None = None) -> LiveServices:
        """In-process subscriptions; no thumbnails, freshness or activity (unit tests)."""
        return cls(
            subscriptions=store or MemorySubscriptions(),
            lag=LagMonitor.off(stage_topics(KafkaSettings())),
        )

    async def original_of(self, post_id: str) -> str | None:
        """The original a repost repeats (recorded by the normalize stage); None when
        ``post_id`` is no known repost, or Redis cannot say."""
        if self.redis is None:
            return self.reposts.get(post_id)
        try:
            raw = await self.redis.get(LiveKeys(self.prefix).repost(post_id))
        except (redis.RedisError, OSError) as exc:
            log.debug("repost look-up failed: %s", exc)
            return None
        if raw is None:
            return None
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)

    async def index_freshness(self) -> IndexFreshness:
        if self.redis is None:
            return IndexFreshness()
        return await read_index_freshness(self.redis, self.prefix)

    async def activity(self, window_s: int = 60) -> Activity:
        if self.redis is None:
            return Activity(window_s, {}, {}, [])
        return await read_activity(self.redis, self.prefix, window_s=window_s)

    async def freshness(self, *, read_index: bool = True) -> Freshness:
        """The freshness object every search (and stats) answer carries (``read_index``
        False: without the index workers' record, which lives in Redis)."""
        index = await self.index_freshness() if read_index else IndexFreshness()
        lags, at = self.lag.snapshot()
        return Freshness(
            indexed_through=_dt(index.indexed_through_ms),
            index_lag_s=index.index_lag_s,
            accepted_at=_dt(index.accepted_at_ms),
            consumer_lag=[
                StageLagModel(stage=x.stage, topic=x.topic, lag=x.lag, reason=x.reason)
                for x in lags
            ],
            consumer_lag_at=None if at is None else datetime.fromtimestamp(at, tz=UTC),
        )

    async def close(self) -> None:
        await self.subscriptions.aclose()
        if self.redis is not None:
            await self.redis.aclose()


def _dt(ms: Any) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(int(ms) / 1000, tz=UTC)
