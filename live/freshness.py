"""Freshness: how far the index has come, written by index workers, read by the API.

After Milvus accepted a batch, the index stage records in one Redis hash:

* ``indexed_through_ms``: the newest post *event time* (``created_at``) ever indexed
  (kept as a maximum, whichever worker wrote last);
* ``index_lag_s``: for the latest batch, seconds from the produce time of its oldest
  record on ``posts.raw`` (the Kafka record timestamp) to Milvus' acceptance;
* ``accepted_at_ms`` and ``batch_rows`` of that batch;
* ``active_subscriptions``: how many standing queries that batch was matched against.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from crossfeed.live.exceptions import LiveUnavailableError
from crossfeed.live.keys import LiveKeys

log = logging.getLogger(__name__)

# KEYS: the hash. ARGV: indexed_through_ms, lag_s ("" = unknown), accepted_at_ms, rows,
# active subscriptions ("" = no percolator).
_RECORD = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'indexed_through_ms') or '-1')
if tonumber(ARGV[1]) > cur then redis.call('HSET', KEYS[1], 'indexed_through_ms', ARGV[1]) end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'index_lag_s', ARGV[2]) end
redis.call('HSET', KEYS[1], 'accepted_at_ms', ARGV[3], 'batch_rows', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'active_subscriptions', ARGV[5]) end
return 1
"""


@dataclass(frozen=True)
class IndexFreshness:
    indexed_through_ms: int | None = None
    index_lag_s: float | None = None
    accepted_at_ms: int | None = None
    batch_rows: int | None = None
    active_subscriptions: int | None = None  # what the index stage matches against


class FreshnessRecorder:
    """The index stage's writer (blocking client; runs in the stage's thread)."""

    def __init__(self, client: redis.Redis, prefix: str, *, clock: Any = time.time) -> None:
        self._client = client
        self._key = LiveKeys(prefix).freshness
        self._script = client.register_script(_RECORD)
        self._clock = clock

    @classmethod
    def from_url(cls, url: str, prefix: str) -> FreshnessRecorder:
        return cls(
            redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=2.0), prefix
        )

    def record(
        self,
        *,
        newest_event_ms: int,
        oldest_produced_ms: int | None,
        rows: int,
        active_subscriptions: int | None = None,
    ) -> None:
        accepted = int(self._clock() * 1000)
        lag = (
            ""
            if oldest_produced_ms is None
            else f"{max(0, accepted - oldest_produced_ms) / 1000:.3f}"
        )
        active = "" if active_subscriptions is None else str(int(active_subscriptions))
        args: list[str | int] = [int(newest_event_ms), lag, accepted, int(rows), active]
        try:
            self._script(keys=[self._key], args=args)
        except (redis.RedisError, OSError) as exc:
            raise LiveUnavailableError(f"Redis freshness write failed: {exc}") from exc

    def close(self) -> None:
        self._client.close()


def _int(raw: Any) -> int | None:
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return None


async def read_index_freshness(client: aioredis.Redis, prefix: str) -> IndexFreshness:
    """What the index workers last recorded; all None when nothing was (or Redis failed)."""
    try:
        raw = await client.hgetall(LiveKeys(prefix).freshness)
    except (redis.RedisError, OSError) as exc:
        log.debug("freshness read failed: %s", exc)
        return IndexFreshness()
    data = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
    lag = data.get("index_lag_s")
    try:
        lag_s = None if lag is None else float(lag)
    except ValueError:
        lag_s = None
    return IndexFreshness(
        indexed_through_ms=_int(data.get("indexed_through_ms")),
        index_lag_s=lag_s,
        accepted_at_ms=_int(data.get("accepted_at_ms")),
        batch_rows=_int(data.get("batch_rows")),
        active_subscriptions=_int(data.get("active_subscriptions")),
    )
