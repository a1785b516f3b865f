"""The seen-content store behind repost detection.

``claim(content_hash, post_id)`` records ``post_id`` as the first post with that
hash unless one is already recorded, and returns the recorded owner. A post is a
repost when the owner is another post; reprocessing the same post after a
restart (at-least-once delivery) gets its own id back, so it never becomes a
duplicate of itself.

Not a faust Table on purpose: tables recover from a changelog topic, and with
brokers whose ListOffsets under-reports end offsets that recovery silently
loses rows. Redis ``SET key id NX EX ttl`` is atomic and survives restarts.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from crossfeed.live.keys import LiveKeys
from crossfeed.streams.exceptions import DedupeUnavailableError

# KEYS: per claim i, the content-hash key, the post's claim key and its repost key;
# ARGV: the TTL, then per claim the post id and the content hash. Returns the owners.
# The same steps as RedisDedupeStore.claim, atomically (no key can expire in between).
_CLAIM_MANY = """
local ttl = tonumber(ARGV[1])
local owners = {}
for i = 1, #KEYS / 3 do
  local key, claim, repost = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local post_id, digest = ARGV[2 * i], ARGV[2 * i + 1]
  local owner = redis.call('GET', key)
  if not owner then
    redis.call('SET', key, post_id, 'EX', ttl)
    redis.call('SET', claim, digest, 'EX', ttl)
    owner = post_id
  elseif owner ~= post_id then
    redis.call('SET', repost, owner, 'EX', ttl)
  end
  owners[i] = owner
end
return owners
"""


class DedupeStore(ABC):
    """Remembers the first post id seen for each content hash, for a limited time."""

    @abstractmethod
    async def claim(self, content_hash: str, post_id: str) -> str:
        """Record ``post_id`` for ``content_hash`` if unseen; return the recorded id.

        Raises :class:`DedupeUnavailableError` (retriable) when the store is unreachable.
        """

    async def claim_many(self, claims: Sequence[tuple[str, str]]) -> list[str]:
        """``claim`` for each ``(content_hash, post_id)`` in order (a micro-batch of the
        normalize stage); the owners, in the same order. Stores override it with one round
        trip."""
        return [await self.claim(digest, post_id) for digest, post_id in claims]

    @abstractmethod
    async def forget(self, post_id: str) -> None:
        """Erasure: drop the claim ``post_id`` holds, so its content is new again."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class InMemoryDedupeStore(DedupeStore):
    """Process-local store for unit tests and single-process experiments."""

    def __init__(self, ttl_s: float = 7 * 24 * 3600, clock: Any = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._owners: dict[str, tuple[str, float]] = {}
        self.reposts: dict[str, str] = {}  # repost id -> the original's

    async def claim(self, content_hash: str, post_id: str) -> str:
        owner = await self._claim(content_hash, post_id)
        if owner != post_id:
            self.reposts[post_id] = owner
        return owner

    async def _claim(self, content_hash: str, post_id: str) -> str:
        now = self._clock()
        owner = self._owners.get(content_hash)
        if owner is not None and owner[1] > now:
            return owner[0]
        self._owners[content_hash] = (post_id, now + self._ttl_s)
        return post_id

    async def forget(self, post_id: str) -> None:
        self.reposts.pop(post_id, None)
        for digest, (owner, _) in list(self._owners.items()):
            if owner == post_id:
                del self._owners[digest]


class RedisDedupeStore(DedupeStore):
    """Redis-backed store: one key per content hash, ``SET NX EX`` so the first writer wins."""

    def __init__(self, url: str, *, key_prefix: str, ttl_s: int, timeout_s: float = 5.0) -> None:
        import redis.asyncio as aioredis  # local: keeps import of this module cheap

        if ttl_s <= 0:
            raise ValueError("dedupe ttl must be positive")
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._prefix = f"{key_prefix}:dedupe:"
        # post id -> the content hash it claimed, so an erasure can release the claim.
        self._claims = f"{key_prefix}:dedupe-post:"
        self._keys = LiveKeys(key_prefix)  # repost id -> original, read by GET /v1/posts
        self._ttl_s = ttl_s
        self._claim_script = self._redis.register_script(_CLAIM_MANY)

    async def claim(self, content_hash: str, post_id: str) -> str:
        import redis.exceptions

        key = self._prefix + content_hash
        try:
            # Two tries: the key can expire between a failed SET NX and the GET.
            for _ in range(2):
                if await self._redis.set(key, post_id, nx=True, ex=self._ttl_s):
                    await self._redis.set(self._claims + post_id, content_hash, ex=self._ttl_s)
                    return post_id
                owner = await self._redis.get(key)
                if owner is not None:
                    first = owner.decode("utf-8") if isinstance(owner, bytes) else str(owner)
                    if first != post_id:
                        await self._redis.set(self._keys.repost(post_id), first, ex=self._ttl_s)
                    return first
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise DedupeUnavailableError(f"redis unreachable for repost check: {exc}") from exc
        return post_id

    async def claim_many(self, claims: Sequence[tuple[str, str]]) -> list[str]:
        """All claims in one atomic script (one round trip instead of two or three per post),
        in order, so a batch holding a post and its repost resolves as one at a time would."""
        import redis.exceptions

        if not claims:
            return []
        keys: list[str] = []
        args: list[Any] = [self._ttl_s]
        for digest, post_id in claims:
            keys += [self._prefix + digest, self._claims + post_id, self._keys.repost(post_id)]
            args += [post_id, digest]
        try:
            owners = await self._claim_script(keys=keys, args=args)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise DedupeUnavailableError(f"redis unreachable for repost check: {exc}") from exc
        return [o.decode("utf-8") if isinstance(o, bytes) else str(o) for o in owners]

    async def forget(self, post_id: str) -> None:
        import redis.exceptions

        try:
            digest = await self._redis.get(self._claims + post_id)
            if digest is not None:
                key = self._prefix + (digest.decode() if isinstance(digest, bytes) else digest)
                owner = await self._redis.get(key)
                if (
                    owner is not None
                    and (owner.decode() if isinstance(owner, bytes) else owner) == post_id
                ):
                    await self._redis.delete(key)
            await self._redis.delete(self._claims + post_id, self._keys.repost(post_id))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise DedupeUnavailableError(f"redis unreachable for erasure: {exc}") from exc

    async def close(self) -> None:
        await self._redis.aclose()
