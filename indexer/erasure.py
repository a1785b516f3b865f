"""Erasure: a post asked to be forgotten leaves every collection, and stays out.

:class:`Eraser` is the one recipe the API (``DELETE /v1/posts/{id}``) and the stream (a
tombstone on ``posts.raw``) both run:

1. the post id goes into the **erasure ledger** (Redis) first, so erase wins over any copy
   still on its way: the normalize stage drops such posts, and the index stage neither
   writes them nor keeps them if an upsert raced the erasure;
2. its rows (text, media, moments) are deleted from **every collection of this
   deployment** (``<CROSSFEED_COLLECTION>`` and each per-version ``__<version>``);
3. the **index epoch** is bumped: every cached search result goes stale at once;
4. an **audit line** (who, when, what: the post id and counts, never its content) is
   logged on ``crossfeed.audit``.

The ledger keeps ids for ``CROSSFEED_ERASURE_RETENTION`` (30 days by default): longer than
posts wait on the topics, and the compacted ``posts.clean`` gets a tombstone so a later
``crossfeed reindex`` finds nothing to bring back.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from crossfeed.core.settings import MilvusSettings, Settings
from crossfeed.indexer.collections import ours
from crossfeed.indexer.exceptions import IndexUnavailableError
from crossfeed.indexer.filters import post_expression

log = logging.getLogger(__name__)
audit = logging.getLogger("crossfeed.audit")

DEFAULT_RETENTION_S = 30 * 24 * 3600


class EpochBump(Protocol):
    def bump(self, fence: int | None = None) -> int: ...


@dataclass
class RemovedRows:
    """Rows deleted per collection, and the newest deletion's Milvus timestamp (a search
    fenced at it no longer sees them; None where the index needs no fence)."""

    by_collection: dict[str, int] = field(default_factory=dict)
    fence: int | None = None


class ErasureLedger(ABC):
    """Post ids that were erased, for ``retention_s`` seconds."""

    @abstractmethod
    async def add(self, post_id: str) -> None: ...

    @abstractmethod
    async def erased(self, post_ids: Iterable[str]) -> set[str]:
        """Which of ``post_ids`` were erased (within the retention)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class MemoryErasureLedger(ErasureLedger):
    def __init__(self, retention_s: float = DEFAULT_RETENTION_S) -> None:
        self._at: dict[str, float] = {}
        self._retention_s = retention_s

    async def add(self, post_id: str) -> None:
        self._at[post_id] = time.time()

    async def erased(self, post_ids: Iterable[str]) -> set[str]:
        cutoff = time.time() - self._retention_s
        return {p for p in post_ids if self._at.get(p, -1.0) >= cutoff}


class RedisErasureLedger(ErasureLedger):
    """A sorted set ``<prefix>:erased``: post id -> when (old members pruned on add)."""

    def __init__(self, url: str, prefix: str, retention_s: float = DEFAULT_RETENTION_S) -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)
        self.key = f"{prefix}:erased"
        self._retention_s = retention_s

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        import redis.exceptions

        try:
            return await fn(*args)
        except redis.exceptions.RedisError as exc:
            raise IndexUnavailableError(
                f"the erasure ledger (Redis) is unavailable: {exc}"
            ) from exc

    async def add(self, post_id: str) -> None:
        now = time.time()
        await self._call(self._redis.zadd, self.key, {post_id: now})
        await self._call(self._redis.zremrangebyscore, self.key, "-inf", now - self._retention_s)

    async def erased(self, post_ids: Iterable[str]) -> set[str]:
        ids = list(dict.fromkeys(post_ids))
        if not ids:
            return set()
        scores = await self._call(self._redis.zmscore, self.key, ids)
        cutoff = time.time() - self._retention_s
        return {p for p, s in zip(ids, scores, strict=True) if s is not None and s >= cutoff}

    async def close(self) -> None:
        await self._redis.aclose()


def remove_post_everywhere(settings: MilvusSettings, post_id: str) -> RemovedRows:
    """Delete ``post_id``'s rows from every collection of this deployment. Blocking
    (Milvus calls); retriable errors raise IndexUnavailableError."""
    from crossfeed.indexer.client import milvus_client
    from crossfeed.indexer.milvus import mutation_fence

    client = milvus_client(settings)
    try:
        removed = RemovedRows()
        expr = post_expression(post_id)
        for name in sorted(n for n in client.list_collections() if ours(n, settings.collection)):
            # The connection's delete (what MilvusClient.delete wraps) also returns the
            # mutation timestamp: the fence a search must wait for to miss these rows.
            result = client._get_connection().delete(name, expr, timeout=30.0)
            removed.by_collection[name] = int(result.delete_count)
            removed.fence = max(removed.fence or 0, mutation_fence(result))
        return removed
    except IndexUnavailableError:
        raise
    except Exception as exc:
        raise IndexUnavailableError(f"cannot erase post {post_id!r} from Milvus: {exc}") from exc
    finally:
        client.close()


@dataclass
class ErasureReport:
    post_id: str
    by: str
    at: datetime
    rows_removed: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "post_id": self.post_id,
            "erased_at": self.at.isoformat(),
            "rows_removed": sum(self.rows_removed.values()),
            "collections": self.rows_removed,
        }


class Eraser:
    """Ledger first, then rows everywhere, then the epoch; each step idempotent, so a
    retried erasure (after an engine outage) finishes the job."""

    def __init__(
        self,
        ledger: ErasureLedger,
        remove_rows: Callable[[str], RemovedRows],
        epoch: EpochBump | None,
        run: Callable[..., Any] | None = None,
    ) -> None:
        self.ledger = ledger
        self._remove_rows = remove_rows
        self._epoch = epoch
        self._run = run

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._run is not None:
            return await self._run(fn, *args)
        import anyio

        return await anyio.to_thread.run_sync(fn, *args)

    async def erase(self, post_id: str, *, by: str) -> ErasureReport:
        report = ErasureReport(post_id=post_id, by=by, at=datetime.now(UTC))
        await self.ledger.add(post_id)
        removed: RemovedRows = await self._blocking(self._remove_rows, post_id)
        report.rows_removed = removed.by_collection
        if self._epoch is not None:
            # With the deletion's fence, so a search under the new epoch cannot still see
            # (and cache) the rows through Milvus' bounded staleness.
            epoch, fence = self._epoch, removed.fence
            await self._blocking(lambda: epoch.bump(fence) if fence else epoch.bump())
        audit.info(
            "erasure post_id=%r by=%s at=%s rows_removed=%d collections=%s",
            post_id,
            by,
            report.at.isoformat(),
            sum(report.rows_removed.values()),
            sorted(report.rows_removed),
        )
        return report


def default_eraser(settings: Settings) -> Eraser:
    """Erasure on the configured engines: the Redis ledger, every collection of this
    deployment in Milvus, and the index epoch."""
    from crossfeed.indexer.epoch import IndexEpoch

    ledger = RedisErasureLedger(
        settings.redis.url.get_secret_value(),
        settings.redis.key_prefix,
        retention_s=settings.stream.erasure_retention_s,
    )
    milvus = settings.milvus
    return Eraser(
        ledger,
        lambda post_id: remove_post_everywhere(milvus, post_id),
        IndexEpoch.from_settings(settings.redis),
    )
