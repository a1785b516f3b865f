"""The index epoch: a Redis counter bumped after every accepted batch of vectors.

Search caches put the epoch in their keys, so a bump makes every cached result
stale at once (the old entries simply expire by TTL) without having to find them.
The counter only ever grows (``INCR``); a missing key reads as 0.
"""

from __future__ import annotations

import redis
import redis.asyncio as aioredis

from crossfeed.core.settings import RedisSettings
from crossfeed.indexer.exceptions import IndexUnavailableError

_SUFFIX = "index:epoch"


def epoch_key(prefix: str) -> str:
    """The Redis key of the epoch counter under ``prefix`` (RedisSettings.key_prefix)."""
    return f"{prefix}:{_SUFFIX}"


def _parse(raw: bytes | str | None) -> int:
    if raw is None:
        return 0
    try:
        return int(raw)
    except ValueError as exc:  # someone wrote garbage under our key
        raise IndexUnavailableError(f"index epoch holds a non-integer value: {raw!r}") from exc


class IndexEpoch:
    """Blocking access, for workers: ``current()`` and ``bump()``."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self.key = epoch_key(prefix)

    @classmethod
    def from_settings(cls, settings: RedisSettings) -> IndexEpoch:
        client = redis.Redis.from_url(
            settings.url.get_secret_value(), socket_timeout=2.0, socket_connect_timeout=2.0
        )
        return cls(client, settings.key_prefix)

    def current(self) -> int:
        try:
            return _parse(self._client.get(self.key))
        except redis.RedisError as exc:
            raise IndexUnavailableError(f"cannot read the index epoch: {exc}") from exc

    def bump(self) -> int:
        """Advance the epoch; returns the new value. Call after a batch is upserted."""
        try:
            return int(self._client.incr(self.key))
        except redis.RedisError as exc:
            raise IndexUnavailableError(f"cannot bump the index epoch: {exc}") from exc

    def close(self) -> None:
        self._client.close()


class AsyncIndexEpoch:
    """The same counter for asyncio code (the API)."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._client = client
        self.key = epoch_key(prefix)

    async def current(self) -> int:
        try:
            return _parse(await self._client.get(self.key))
        except redis.RedisError as exc:
            raise IndexUnavailableError(f"cannot read the index epoch: {exc}") from exc

    async def bump(self) -> int:
        try:
            return int(await self._client.incr(self.key))
        except redis.RedisError as exc:
            raise IndexUnavailableError(f"cannot bump the index epoch: {exc}") from exc
