"""The search-result cache: Redis in production, a dict in tests.

Keys hash the normalised query, the filters, ``top_k``, the index epoch and the
model version (:func:`cache_key`), so a new batch of vectors (epoch bump) or a new
model makes old entries unreachable; they then expire by TTL.

The cache is an optimisation, never a dependency: every Redis failure is logged
and answered as a miss / a no-op, and after one failure Redis is left alone for a
short back-off so a dead cache does not add a timeout to every request.
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

from crossfeed.core.settings import RedisSettings
from crossfeed.indexer.epoch import AsyncIndexEpoch

log = logging.getLogger(__name__)

KEY_VERSION = "v2"  # bump when the cached payload's shape changes (v2: pages, sources)
_BACKOFF_S = 5.0


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

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class RedisSearchCache(SearchCache):
    def __init__(self, client: aioredis.Redis, *, prefix: str, ttl_s: int) -> None:
        self._client = client
        self.prefix = prefix
        self._ttl = max(1, int(ttl_s))
        self._epoch = AsyncIndexEpoch(client, prefix)
        self._down_until = 0.0

    @classmethod
    def from_settings(cls, settings: RedisSettings) -> RedisSearchCache:
        # Short timeouts: a slow cache must cost less than the search it would save.
        client = aioredis.Redis.from_url(
            settings.url.get_secret_value(),
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
        )
        return cls(client, prefix=settings.key_prefix, ttl_s=settings.cache_ttl_s)

    def _skipping(self) -> bool:
        return time.monotonic() < self._down_until

    def _failed(self, action: str, exc: BaseException) -> None:
        log.warning(
            "search cache %s failed, serving uncached for %.0fs: %s", action, _BACKOFF_S, exc
        )
        self._down_until = time.monotonic() + _BACKOFF_S

    async def epoch(self) -> int | None:
        if self._skipping():
            return None
        try:
            return await self._epoch.current()
        except Exception as exc:  # IndexUnavailableError, OSError...: degrade, never fail a search
            self._failed("epoch read", exc)
            return None

    async def epoch_state(self) -> tuple[int, int | None] | None:
        if self._skipping():
            return None
        try:
            return await self._epoch.current_with_fence()
        except Exception as exc:  # as in epoch(): degrade to an uncached search
            self._failed("epoch read", exc)
            return None

    async def get(self, key: str) -> dict[str, Any] | None:
        if self._skipping():
            return None
        try:
            raw = await self._client.get(key)
        except (redis.RedisError, OSError) as exc:
            self._failed("read", exc)
            return None
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            log.warning("dropping an undecodable cache entry %s", key)
            return None
        return value if isinstance(value, dict) else None

    async def set(self, key: str, value: dict[str, Any]) -> None:
        if self._skipping():
            return
        try:
            await self._client.set(key, json.dumps(value, separators=(",", ":")), ex=self._ttl)
        except (redis.RedisError, OSError) as exc:
            self._failed("write", exc)

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
