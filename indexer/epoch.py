"""The index epoch: a Redis counter bumped after every accepted batch of vectors.

Search caches put the epoch in their keys, so a bump makes every cached result
stale at once (the old entries simply expire by TTL) without having to find them.
The counter only ever grows (``INCR``); a missing key reads as 0.

With the epoch goes a *write fence* (:meth:`VectorIndex.write_fence`): the newest
index write any worker announced. A bump stores the batch's fence (as a maximum)
in the same atomic step, and readers get both in one ``MGET``; a search that uses
the fence sees every row its epoch promises, so nothing computed from an older view
of the index can be cached under the new epoch.
"""

from __future__ import annotations

import redis
import redis.asyncio as aioredis

from crossfeed.core.settings import RedisSettings
from crossfeed.indexer.exceptions import IndexUnavailableError

_SUFFIX = "index:epoch"
_FENCE_SUFFIX = "index:fence"

# KEYS: epoch, fence. ARGV: the batch's fence ("" = none). Returns the new epoch.
_BUMP = """
local epoch = redis.call('INCR', KEYS[1])
if ARGV[1] ~= '' then
  local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
  if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[2], ARGV[1]) end
end
return epoch
"""


def epoch_key(prefix: str) -> str:
    """The Redis key of the epoch counter under ``prefix`` (RedisSettings.key_prefix)."""
    return f"{prefix}:{_SUFFIX}"


def fence_key(prefix: str) -> str:
    """The Redis key of the write fence that goes with the epoch."""
    return f"{prefix}:{_FENCE_SUFFIX}"


def _parse(raw: bytes | str | None) -> int:
    if raw is None:
        return 0
    try:
        return int(raw)
    except ValueError as exc:  # someone wrote garbage under our key
        raise IndexUnavailableError(f"index epoch holds a non-integer value: {raw!r}") from exc


def _fence(raw: bytes | str | None) -> int | None:
    try:
        value = int(raw) if raw is not None else 0
    except ValueError:
        return None  # a garbled fence only costs freshness guarantees, never a search
    return value or None


class IndexEpoch:
    """Blocking access, for workers: ``current()`` and ``bump()``."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self.key = epoch_key(prefix)
        self.fence_key = fence_key(prefix)
        self._bump = client.register_script(_BUMP)

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

    def bump(self, fence: int | None = None) -> int:
        """Advance the epoch; returns the new value. Call after a batch is upserted, with
        the index's write fence when it has one."""
        try:
            arg = "" if not fence else str(int(fence))
            return int(self._bump(keys=[self.key, self.fence_key], args=[arg]))
        except redis.RedisError as exc:
            raise IndexUnavailableError(f"cannot bump the index epoch: {exc}") from exc

    def close(self) -> None:
        self._client.close()


class AsyncIndexEpoch:
    """The same counter for asyncio code (the API)."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._client = client
        self.key = epoch_key(prefix)
        self.fence_key = fence_key(prefix)

    async def current(self) -> int:
        try:
            return _parse(await self._client.get(self.key))
        except redis.RedisError as exc:
            raise IndexUnavailableError(f"cannot read the index epoch: {exc}") from exc

    async def current_with_fence(self) -> tuple[int, int | None]:
        """The epoch and its write fence, read together (one atomic ``MGET``)."""
        try:
            raw_epoch, raw_fence = await self._client.mget([self.key, self.fence_key])
        except redis.RedisError as exc:
            raise IndexUnavailableError(f"cannot read the index epoch: {exc}") from exc
        return _parse(raw_epoch), _fence(raw_fence)

    async def bump(self) -> int:
        try:
            return int(await self._client.incr(self.key))
        except redis.RedisError as exc:
            raise IndexUnavailableError(f"cannot bump the index epoch: {exc}") from exc
