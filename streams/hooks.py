"""The live-monitoring hooks of one worker: percolator, freshness, thumbnails, activity.

Built from settings against Redis by default (:meth:`LiveHooks.from_settings`); unit
tests and tools that must not touch the shared Redis pass ``LiveHooks()`` (all off) or
hooks over in-memory stores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from crossfeed.core.breaker import Outage
from crossfeed.core.settings import Settings
from crossfeed.live.activity import ActivityPublisher
from crossfeed.live.freshness import FreshnessRecorder
from crossfeed.live.percolator import Percolator
from crossfeed.live.thumbs import ThumbnailWriter


@dataclass(frozen=True)
class ThumbnailPolicy:
    writer: ThumbnailWriter
    max_px: int = 256
    max_bytes: int = 32 * 1024
    outage: Outage | None = None  # the breaker around Redis: while open, no thumbnails

    @property
    def skipping(self) -> bool:
        return self.outage is not None and self.outage.down


@dataclass
class LiveHooks:
    """What a worker's stages do for live monitoring; None = that part is off."""

    percolator: Percolator | None = None
    freshness: FreshnessRecorder | None = None
    thumbnails: ThumbnailPolicy | None = None
    activity: ActivityPublisher | None = None
    closers: list[Callable[[], Any]] = field(default_factory=list)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        stages: Sequence[str],
        registry: Any,
        outage: Outage | None = None,
    ) -> LiveHooks:
        """Redis-backed hooks for ``stages`` (clients connect on first use); ``outage``:
        the worker's breaker around Redis (thumbnails are skipped while it is open)."""
        import redis

        from crossfeed.live.redis_store import RedisSubscriptionFeed

        url = settings.redis.url.get_secret_value()
        prefix = settings.redis.key_prefix
        hooks = cls()
        if "index" in stages:
            feed = RedisSubscriptionFeed.from_settings(settings.redis, settings.live)
            hooks.percolator = Percolator(
                feed,
                screen=settings.live.percolator_screen,
                blas_threads=settings.live.percolator_threads,
            )
            hooks.freshness = FreshnessRecorder.from_url(url, prefix)
            hooks.closers += [feed.close, hooks.freshness.close]
        if "embed" in stages and settings.live.thumbnails:
            writer = ThumbnailWriter.from_url(url, prefix, ttl_s=settings.live.thumb_ttl_s)
            hooks.thumbnails = ThumbnailPolicy(
                writer, settings.live.thumb_px, settings.live.thumb_max_bytes, outage
            )
            hooks.closers.append(writer.close)
        client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        hooks.activity = ActivityPublisher(registry, client, prefix)
        hooks.closers.append(hooks.activity.close)
        return hooks

    def close(self) -> None:
        for close in self.closers:
            close()
        self.closers.clear()
