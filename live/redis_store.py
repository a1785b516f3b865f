"""Subscriptions and their events in Redis: the API's store and the index stage's feed.

A subscription is a JSON value under its own key plus a member of a sorted set
(score: creation time) that lists them; a version counter changes on every create
and delete, so index workers reload their cached matrix only when it moved.

Matches go to one Redis Stream per subscription, trimmed to about
``events_maxlen`` entries. A Lua script records them atomically with their
dedupe mark (``SET NX EX`` then ``XADD``), so a replayed batch (at-least-once
delivery) never records a match twice and a crash between the two steps cannot
lose one. Stream ids are the SSE event ids: ``XREAD`` from a ``Last-Event-ID``
resumes exactly after it.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio as aioredis

from crossfeed.core.settings import LiveSettings, RedisSettings
from crossfeed.live.base import (
    Match,
    MatchEvent,
    Subscription,
    SubscriptionFeed,
    SubscriptionPage,
    SubscriptionStore,
)
from crossfeed.live.codec import decode, encode
from crossfeed.live.exceptions import LiveUnavailableError, SubscriptionLimitError
from crossfeed.live.keys import LiveKeys

log = logging.getLogger(__name__)

_LOAD_CHUNK = 1000

# KEYS: sub record, events stream, seen mark per match. ARGV: ttl, maxlen, data per match.
_RECORD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = 0
for i = 3, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'data', ARGV[i])
    n = n + 1
  end
end
return n
"""


def _decode_or_none(raw: bytes | None, where: str) -> Subscription | None:
    if raw is None:
        return None
    try:
        return decode(raw)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring an undecodable subscription at %s: %s", where, exc)
        return None


def _event(entry_id: bytes | str, fields: dict[Any, Any]) -> MatchEvent | None:
    raw = fields.get(b"data", fields.get("data"))
    event_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    try:
        data = json.loads(raw) if raw is not None else None
    except (TypeError, ValueError):
        data = None
    if data is None:
        log.warning("skipping an undecodable event %s", event_id)
        return None
    return MatchEvent(event_id, data if isinstance(data, dict) else {"value": data})


class RedisSubscriptionStore(SubscriptionStore):
    """The API's store (asyncio). ``blocking`` serves XREAD BLOCK (a longer timeout)."""

    def __init__(self, client: aioredis.Redis, blocking: aioredis.Redis, prefix: str) -> None:
        self._client = client
        self._blocking = blocking
        self.keys = LiveKeys(prefix)

    @classmethod
    def from_settings(
        cls, redis_settings: RedisSettings, live: LiveSettings
    ) -> RedisSubscriptionStore:
        url = redis_settings.url.get_secret_value()
        client = aioredis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        blocking = aioredis.Redis.from_url(
            url, socket_timeout=live.sse_heartbeat_s + 10.0, socket_connect_timeout=2.0
        )
        return cls(client, blocking, redis_settings.key_prefix)

    async def _do(self, what: str, coro: Any) -> Any:
        try:
            return await coro
        except (redis.RedisError, OSError) as exc:
            raise LiveUnavailableError(f"Redis {what} failed: {exc}") from exc

    async def create(self, sub: Subscription, *, limit: int) -> None:
        k = self.keys
        count = await self._do("count", self._client.zcard(k.subs))
        if int(count) >= limit:
            raise SubscriptionLimitError(
                f"{count} subscriptions exist, the limit is {limit} (CROSSFEED_MAX_SUBSCRIPTIONS); "
                "delete some first"
            )
        pipe = self._client.pipeline(transaction=True)
        pipe.set(k.sub(sub.id), encode(sub))
        pipe.zadd(k.subs, {sub.id: sub.created_at_ms})
        pipe.incr(k.subs_version)
        await self._do("create", pipe.execute())

    async def get(self, sub_id: str) -> Subscription | None:
        raw = await self._do("read", self._client.get(self.keys.sub(sub_id)))
        return _decode_or_none(raw, sub_id)

    async def page(self, *, limit: int, offset: int = 0) -> SubscriptionPage:
        k = self.keys
        total = int(await self._do("count", self._client.zcard(k.subs)))
        ids = await self._do("list", self._client.zrevrange(k.subs, offset, offset + limit - 1))
        if not ids:
            return SubscriptionPage([], total)
        raws = await self._do("read", self._client.mget([k.sub(i.decode()) for i in ids]))
        items = [s for i, r in zip(ids, raws, strict=True) if (s := _decode_or_none(r, i.decode()))]
        return SubscriptionPage(items, total)

    async def delete(self, sub_id: str) -> bool:
        k = self.keys
        removed = await self._do("delete", self._client.zrem(k.subs, sub_id))
        pipe = self._client.pipeline(transaction=True)
        pipe.unlink(k.sub(sub_id), k.events(sub_id))
        pipe.incr(k.subs_version)
        await self._do("delete", pipe.execute())
        # Dedupe marks expire by themselves; removing them now frees the memory early.
        batch: list[Any] = []
        try:
            async for key in self._client.scan_iter(match=k.seen_pattern(sub_id), count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    await self._client.unlink(*batch)
                    batch.clear()
            if batch:
                await self._client.unlink(*batch)
        except (redis.RedisError, OSError) as exc:
            log.warning("dedupe marks of subscription %s left to expire: %s", sub_id, exc)
        return bool(removed)

    async def count(self) -> int:
        return int(await self._do("count", self._client.zcard(self.keys.subs)))

    async def read_events(
        self, sub_id: str, after: str, *, count: int, block_s: float
    ) -> list[MatchEvent]:
        block_ms = max(1, int(block_s * 1000)) if block_s > 0 else None
        reply = await self._do(
            "stream read",
            self._blocking.xread({self.keys.events(sub_id): after}, count=count, block=block_ms),
        )
        out: list[MatchEvent] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                event = _event(entry_id, fields)
                if event is not None:
                    out.append(event)
        return out

    async def last_event_id(self, sub_id: str) -> str | None:
        entries = await self._do(
            "stream read", self._client.xrevrange(self.keys.events(sub_id), count=1)
        )
        if not entries:
            return None
        entry_id = entries[0][0]
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def aclose(self) -> None:
        await self._client.aclose()
        await self._blocking.aclose()


class RedisSubscriptionFeed(SubscriptionFeed):
    """The index stage's feed and sink (blocking client; runs in the stage's thread)."""

    def __init__(
        self, client: redis.Redis, prefix: str, *, events_maxlen: int, dedupe_ttl_s: int
    ) -> None:
        self._client = client
        self.keys = LiveKeys(prefix)
        self._maxlen = int(events_maxlen)
        self._ttl = int(dedupe_ttl_s)
        self._record = client.register_script(_RECORD)

    @classmethod
    def from_settings(
        cls, redis_settings: RedisSettings, live: LiveSettings
    ) -> RedisSubscriptionFeed:
        client = redis.Redis.from_url(
            redis_settings.url.get_secret_value(), socket_timeout=5.0, socket_connect_timeout=2.0
        )
        return cls(
            client,
            redis_settings.key_prefix,
            events_maxlen=live.events_maxlen,
            dedupe_ttl_s=live.match_dedupe_ttl_s,
        )

    def _do(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (redis.RedisError, OSError) as exc:
            raise LiveUnavailableError(f"Redis {what} failed: {exc}") from exc

    def version(self) -> int:
        raw = self._do("read", self._client.get, self.keys.subs_version)
        try:
            return int(raw or 0)
        except ValueError:
            return -1  # garbage under our key: reload every time rather than never

    def load(self) -> list[Subscription]:
        ids = [i.decode() for i in self._do("list", self._client.zrange, self.keys.subs, 0, -1)]
        subs: list[Subscription] = []
        for start in range(0, len(ids), _LOAD_CHUNK):
            chunk = ids[start : start + _LOAD_CHUNK]
            pipe = self._client.pipeline(transaction=False)
            for sub_id in chunk:
                pipe.get(self.keys.sub(sub_id))
            raws = self._do("read", pipe.execute)
            subs.extend(s for i, r in zip(chunk, raws, strict=True) if (s := _decode_or_none(r, i)))
        return subs

    def record(self, matches: Sequence[Match]) -> int:
        if not matches:
            return 0
        by_sub: dict[str, list[Match]] = defaultdict(list)
        for m in matches:
            by_sub[m.sub_id].append(m)
        pipe = self._client.pipeline(transaction=False)
        for sub_id, items in by_sub.items():
            k = self.keys
            keys = [k.sub(sub_id), k.events(sub_id), *(k.seen(sub_id, m.post_id) for m in items)]
            args: list[Any] = [self._ttl, self._maxlen]
            args += [json.dumps(m.data, separators=(",", ":"), ensure_ascii=False) for m in items]
            self._record(keys=keys, args=args, client=pipe)
        results = self._do("match record", pipe.execute)
        return sum(int(r or 0) for r in results)

    def close(self) -> None:
        self._client.close()
