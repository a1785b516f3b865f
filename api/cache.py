"""The search-result cache: Redis in production, a dict in tests.

Keys hash the normalised query, the filters, ``top_k``, the index epoch and the
model version (:func:`cache_key`), so a new batch of vectors (epoch bump) or a new
model makes old entries unreachable; they then expire by TTL.

The cache is an optimisation, never a dependency: every Redis failure is answered as
a miss / a no-op, and Redis calls go through a circuit breaker (:mod:`crossfeed.core.
breaker`) so a dead cache costs one fast failure per interval, not a timeout per request.
While the circuit is not closed the epoch reads as unknown, so searches neither read
nor fill the cache and say ``"degraded": ["cache"]``: entries written before the outage
may miss posts indexed during it, and the index worker's first epoch bump after the
outage (owed while Redis was away) makes them unreachable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from abc import ABC, abstractmethod
from typing import Any

import redis
import redis.asyncio as aioredis

from crossfeed.core.breaker import Outage, redis_outage
from crossfeed.core.settings import RedisSettings
from crossfeed.exceptions import CircuitOpenError
from crossfeed.indexer.epoch import AsyncIndexEpoch

log = logging.getLogger(__name__)

KEY_VERSION = "v2"  # bump when the cached payload's shape changes (v2: pages, sources)


def normalize_text_query(text: str) -> str:
    """Lower-case and collapse whitespace: "Red  Car\\n" and "red car" share results.

    The encoder is given this same normalised text, so the cached answer is exactly
    what a fresh search would return (the bundled MiniLM is uncased anyway).
    """
    return " ".join(text.split()).lower()


def cache_key(
    prefix: str,
    *,
    kind: str,
    query: str,
    filters: dict[str, Any],
    top_k: int,
    epoch: int,
    model_version: str,
    page: list[Any] | None = None,
) -> str:
    """``<prefix>:search:v2:<sha256>`` over a canonical JSON of everything that shapes results
    (``page``: where the previous page ended, for the pages after the first)."""
    material = json.dumps(
        {
            "kind": kind,
            "query": query,
            "filters": filters,
            "top_k": top_k,
            "epoch": epoch,
            "model": model_version,
            "page": page,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    digest = hashlib.sha256(material.encode("utf-8", errors="surrogatepass")).hexdigest()
    return f"{prefix}:search:{KEY_VERSION}:{digest}"


class SearchCache(ABC):
    """What the API needs from a cache; every method swallows its own failures."""

    prefix: str

    @abstractmethod
    async def epoch(self) -> int | None:
        """The current index epoch, or None when it cannot be read (then: no caching)."""

    async def epoch_state(self) -> tuple[int, int | None] | None:
        """The epoch and the index write fence that goes with it (see indexer/epoch.py);
        None when unreadable. A search caching under this epoch must use the fence."""
        epoch = await self.epoch()
        return None if epoch is None else (epoch, None)

    @abstractmethod
    async def get(self, key: str) -> dict[str, Any] | None:
        """The cached payload, or None (miss or failure)."""

    @abstractmethod
    async def set(self, key: str, value: dict[str, Any]) -> None:
        """Store a payload with the TTL; failures are logged, not raised."""

    @abstractmethod
    async def ping(self) -> bool:
        """True when the backing store answers (readiness)."""

    @property
    def degraded(self) -> bool:
        """The backing store is away: searches are answered uncached."""
        return False

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class RedisSearchCache(SearchCache):
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        ttl_s: int,
        outage: Outage | None = None,
    ) -> None:
        self._client = client
        self.prefix = prefix
        self._ttl = max(1, int(ttl_s))
        self._epoch = AsyncIndexEpoch(client, prefix)
        self.outage = outage or Outage("redis")
        self._unread = False  # the last epoch read failed (before the circuit opened, too)

    @classmethod
    def from_settings(cls, settings: RedisSettings) -> RedisSearchCache:
        # Short timeouts: a slow cache must cost less than the search it would save.
        client = aioredis.Redis.from_url(
            settings.url.get_secret_value(),
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
        )
        return cls(
            client,
            prefix=settings.key_prefix,
            ttl_s=settings.cache_ttl_s,
            outage=redis_outage(settings),
        )

    @property
    def degraded(self) -> bool:
        return self._unread or self.outage.down

    async def _guarded(self, action: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args)`` through the breaker; None when Redis failed or is known away."""
        try:
            return await self.outage.acall(fn, *args, **kwargs)
        except CircuitOpenError:
            return None
        except Exception as exc:  # IndexUnavailableError, RedisError, OSError: degrade
            log.debug("search cache %s failed: %s", action, exc)
            return None

    async def epoch(self) -> int | None:
        state = await self.epoch_state()
        return None if state is None else state[0]

    async def epoch_state(self) -> tuple[int, int | None] | None:
        state = await self._guarded("epoch read", self._epoch.current_with_fence)
        self._unread = state is None
        if state is None or self.outage.down:
            return None
        epoch, fence = state
        return int(epoch), fence

    async def get(self, key: str) -> dict[str, Any] | None:
        if self.outage.down:
            return None
        raw = await self._guarded("read", self._client.get, key)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            log.warning("dropping an undecodable cache entry %s", key)
            return None
        return value if isinstance(value, dict) else None

    async def set(self, key: str, value: dict[str, Any]) -> None:
        if self.outage.down:
            return
        payload = json.dumps(value, separators=(",", ":"))
        await self._guarded("write", self._client.set, key, payload, ex=self._ttl)

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except (redis.RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._client.aclose()


class MemorySearchCache(SearchCache):
    """A process-local cache with TTL, for tests and single-process demos.

    ``bump()`` stands in for the index worker's epoch bump (and its write fence).
    """

    def __init__(self, *, prefix: str = "crossfeed", ttl_s: int = 300) -> None:
        self.prefix = prefix
        self._ttl = ttl_s
        self._epoch = 0
        self._fence: int | None = None
        self._items: dict[str, tuple[float, str]] = {}
        self.available = True  # tests flip this to simulate an outage

    def bump(self, fence: int | None = None) -> int:
        self._epoch += 1
        if fence:
            self._fence = max(self._fence or 0, fence)
        return self._epoch

    async def epoch(self) -> int | None:
        return self._epoch if self.available else None

    async def epoch_state(self) -> tuple[int, int | None] | None:
        return (self._epoch, self._fence) if self.available else None

    async def get(self, key: str) -> dict[str, Any] | None:
        if not self.available:
            return None
        entry = self._items.get(key)
        if entry is None or entry[0] < time.monotonic():
            self._items.pop(key, None)
            return None
        value = json.loads(entry[1])
        return value if isinstance(value, dict) else None

    async def set(self, key: str, value: dict[str, Any]) -> None:
        if self.available:
            self._items[key] = (time.monotonic() + self._ttl, json.dumps(value))

    async def ping(self) -> bool:
        return self.available

    @property
    def degraded(self) -> bool:
        return not self.available
