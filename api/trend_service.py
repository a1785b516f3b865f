"""The API's handle on the trend tracker (see :mod:`crossfeed.api.trends` for the routes).

The tracker's calls block, so they run in a worker thread. It is opened on first use:
the API starts while Redis does not answer, and a trends call then answers 503.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import anyio

from crossfeed.api.exceptions import NotFoundError
from crossfeed.api.trend_models import TrendKindFilter
from crossfeed.core.settings import Settings
from crossfeed.trends.base import TrendTracker, TrendView

# Posts of one trend a trend-scoped search looks at (its most recent ones): bounds the
# post-id filter sent to the index (see crossfeed.indexer.filters.MAX_EXCLUDED_POSTS).
MAX_TREND_POSTS = 1000


def open_tracker(settings: Settings) -> TrendTracker:
    """The deployment's tracker: state in Redis (``<key prefix>:trends``), shared with the
    workers that feed it."""
    import redis

    from crossfeed.trends.tracker import open_tracker as open_store_tracker

    client = redis.Redis.from_url(
        settings.redis.url.get_secret_value(), socket_timeout=2.0, socket_connect_timeout=2.0
    )
    return open_store_tracker(settings, client)


class TrendService:
    """The API's handle on the tracker: opened once, on first use, from ``open_tracker``."""

    def __init__(self, tracker: TrendTracker | Callable[[], TrendTracker]) -> None:
        self._tracker = tracker if isinstance(tracker, TrendTracker) else None
        self._factory = None if isinstance(tracker, TrendTracker) else tracker
        self.owned = self._factory is not None
        self._lock = threading.Lock()

    def tracker(self) -> TrendTracker:
        """The tracker (blocking: call from a worker thread)."""
        with self._lock:
            if self._tracker is None:
                assert self._factory is not None
                self._tracker = self._factory()
            return self._tracker

    async def current(self, kind: TrendKindFilter, limit: int) -> list[TrendView]:
        wanted = None if kind == "all" else kind
        return await anyio.to_thread.run_sync(
            lambda: self.tracker().current(kind=wanted, limit=limit)
        )

    async def get(self, trend_id: str) -> TrendView:
        view = await anyio.to_thread.run_sync(lambda: self.tracker().get(trend_id))
        if view is None:
            raise NotFoundError(f"no current or recent trend has the id {trend_id!r}")
        return view

    async def member_ids(self, trend_id: str) -> tuple[str, ...]:
        """The trend's recent post ids for a scoped search; 404 for an unknown trend."""

        def members() -> tuple[TrendView | None, list[str]]:
            tracker = self.tracker()
            return tracker.get(trend_id), tracker.member_ids(trend_id, limit=MAX_TREND_POSTS)

        view, ids = await anyio.to_thread.run_sync(members)
        if view is None and not ids:
            raise NotFoundError(f"no current or recent trend has the id {trend_id!r}")
        return tuple(dict.fromkeys(ids))[:MAX_TREND_POSTS]

    def close(self) -> None:
        if self.owned and self._tracker is not None:
            self._tracker.close()
            self._tracker = None


async def scope_to_trend(service: TrendService | None, trend_id: str) -> tuple[str, ...]:
    """The post ids a search with ``filters.trend`` is restricted to (404: unknown trend)."""
    if service is None:
        raise NotFoundError(
            f"no trend {trend_id!r}: trends are off in this deployment (CROSSFEED_TRENDS=0)"
        )
    return await service.member_ids(trend_id)
