"""The *index* stage: ``posts.vectors`` batches -> upserts into the vector index.

A batch is upserted in one call keyed by ``row_id`` (idempotent: a replayed
record overwrites its own row). Retriable failures (the engine is down or
throttling) are retried with back-off for as long as it takes; the agent acks
the batch's messages only after this returns, so their offsets are committed
only once the index accepted them. A non-retriable failure is narrowed down by
splitting the batch in halves until the offending rows are found; those alone
are dead-lettered (stage "index"). After each accepted batch the index epoch is
bumped (with the index's write fence, so a search cached under the new epoch sees
these rows), the batch is matched against every standing query (a percolator,
:mod:`crossfeed.live.percolator`), and the index freshness is recorded.

Redis away (given an ``outage``, the circuit breaker around it): the stage keeps
indexing. What it could not do is *owed* and done by :meth:`IndexStage.settle` once Redis
answers (before the next batch, and on the worker's timer): the epoch bump (with the
newest fence of the outage's batches, so the first bump after the outage makes every
result cached before it unreachable), the erasure checks of the posts it indexed (an
erased post's rows are then deleted), and the standing-query matches, held in memory up
to ``match_buffer`` (more are dropped and counted). Subscriptions are matched as last
loaded; freshness is not recorded.

Version guard: a stage built with ``model_version`` writes only records of that
version. Vectors of different versions live in different spaces (and may differ
in dimension), so after a worker is switched to a new version and collection,
records of the old version still waiting on ``posts.vectors`` would otherwise
overwrite the new rows with the same ``row_id``; they are counted, logged once
per version and acknowledged without being written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, cast

from crossfeed.core.breaker import Outage
from crossfeed.core.schema import VectorRecord
from crossfeed.core.settings import KafkaSettings
from crossfeed.exceptions import CircuitOpenError, CrossfeedError
from crossfeed.indexer.base import IndexRow, VectorIndex
from crossfeed.indexer.erasure import ErasureLedger
from crossfeed.live.base import Match
from crossfeed.live.freshness import FreshnessRecorder
from crossfeed.live.percolator import Percolator
from crossfeed.streams.delivery import (
    DeadLetters,
    Publisher,
    retry_forever,
)
from crossfeed.streams.metrics import WorkerMetrics
from crossfeed.streams.owed import OwedToRedis
from crossfeed.streams.trends import TrendsStep, observations_from_rows

log = logging.getLogger(__name__)


class EpochBumper(Protocol):
    """What the stage needs of :class:`crossfeed.indexer.epoch.IndexEpoch`: ``bump()``,
    and ``bump(fence)`` when the index hands out write fences."""

    def bump(self, fence: int | None = None) -> int: ...


@dataclass
class IndexReport:
    records: int = 0
    rows_written: int = 0
    deadlettered: int = 0
    skipped: int = 0  # records of another model version (see ``model_version``)
    epoch: int | None = None
    matches: int = 0  # new standing-query matches recorded


@dataclass(frozen=True)
class _Pending:
    row: IndexRow
    payload: bytes
    produced_ms: int | None = None  # the post's produce time on posts.raw


def to_index_row(record: VectorRecord) -> IndexRow:
    """The stored form of a vector record (times in epoch milliseconds, no Nones)."""
    return IndexRow(
        row_id=record.row_id,
        post_id=record.post_id,
        item=record.item,
        modality=record.modality,
        vector=record.vector,
        created_at_ms=int(record.created_at.timestamp() * 1000),
        author=record.author,
        text=record.text,
        tags=list(record.tags),
        lang=record.lang or "",
        model_version=record.model_version,
        media_ref=record.media_ref or "",
        suggested_tags=list(record.suggested_tags),
        moment=record.moment,
        start_ms=None if record.start_s is None else round(record.start_s * 1000),
        end_ms=None if record.end_s is None else round(record.end_s * 1000),
        source=record.source or "",
    )


class IndexStage:
    """Upserts vector records into a :class:`VectorIndex`, at least once and without duplicates.

    ``model_version``: only records of this version are written (None = all). A
    callable is asked once per batch (in the stage's thread), for a version known
    only once the worker's embedder is loaded.
    """

    def __init__(
        self,
        *,
        index: VectorIndex | Callable[[], VectorIndex],
        epoch: EpochBumper | None,
        publisher: Publisher,
        topics: KafkaSettings,
        metrics: WorkerMetrics,
        executor: Executor | None = None,
        model_version: str | Callable[[], str | None] | None = None,
        percolator: Percolator | None = None,
        freshness: FreshnessRecorder | None = None,
        erasures: ErasureLedger | None = None,
        trends: TrendsStep | None = None,
        outage: Outage | None = None,
        match_buffer: int = 10_000,
    ) -> None:
        self._erasures = erasures
        self._trends = trends
        self._outage = outage
        self._owed = OwedToRedis(metrics, max(0, match_buffer))
        self._settling: asyncio.Lock | None = None
        self._index: VectorIndex | None = index if isinstance(index, VectorIndex) else None
        self._index_factory = None if isinstance(index, VectorIndex) else index
        self._ready_dims: set[int] = set()
        self._epoch = epoch
        self._dead = DeadLetters(publisher, topics.topic_deadletter, metrics)
        self._metrics = metrics
        self._model_version = model_version
        self._percolator = percolator
        self._freshness = freshness
        self._foreign_versions: set[str] = set()  # versions already logged as skipped
        self._own_executor = executor is None
        # One thread: index calls are serialised anyway, and clients need not be thread-safe.
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix="crossfeed-index")
        # Matching standing queries overlaps the upsert, so it gets a thread of its own.
        self._match_executor = ThreadPoolExecutor(1, thread_name_prefix="crossfeed-match")

    def close(self) -> None:
        """Close the index if this stage opened it (from a factory); an index passed in
        belongs to whoever passed it, who closes it."""
        if self._index_factory is not None and self._index is not None:
            self._index.close()
            self._index = None
        if self._own_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._match_executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _get_index(self) -> VectorIndex:
        if self._index is None:
            assert self._index_factory is not None
            self._index = self._index_factory()
        return self._index

    async def handle_batch(self, values: Sequence[bytes | None]) -> IndexReport:
        report = IndexReport(records=len(values))
        self._metrics.posts_in.labels(stage="index").inc(len(values))
        await self.settle()
        pending: dict[str, _Pending] = {}  # a replayed record in the same batch: last one wins
        wanted = await self._wanted_version()
        for value in values:
            if value is None:  # a tombstone: the post was erased (its rows already went)
                continue
            payload = value
            record = await self._dead.parse(VectorRecord, payload, "index", "vector record")
            if record is None:
                report.deadlettered += 1
                continue
            if wanted is not None and record.model_version != wanted:
                self._skip_foreign(record.model_version, wanted)
                report.skipped += 1
                continue
            row = to_index_row(record)
            produced = record.produced_at
            produced_ms = None if produced is None else int(produced.timestamp() * 1000)
            pending[row.row_id] = _Pending(row, payload, produced_ms)
        pending = await self._without_erased(pending)
        if not pending:
            return report

        # Matching is pure CPU and needs only the vectors: it runs while Milvus takes the
        # upsert (an I/O wait for this stage); its matches are recorded only afterwards.
        matching = self._start_matching([p.row for p in pending.values()])
        started = time.perf_counter()
        accepted: list[_Pending] = []
        try:
            written = await self._upsert(list(pending.values()), report, accepted)
        except BaseException:
            if matching is not None:
                matching.cancel()
            raise
        self._metrics.index_batch_seconds.observe(time.perf_counter() - started)
        accepted = await self._undo_raced_erasures(accepted)
        report.rows_written = written
        self._metrics.indexed.inc(written)
        self._metrics.posts_out.labels(stage="index").inc(written)
        if written and self._epoch is not None:
            fence = await self._run(self._get_index().write_fence)
            report.epoch = await self._bump(fence)
        if accepted:
            self._observe_trends(accepted)
            report.matches = await self._after_accept(accepted, matching)
        elif matching is not None:
            matching.cancel()
        return report

    def _observe_trends(self, accepted: list[_Pending]) -> None:
        """Hand the accepted posts to the trends step (queued; never blocks, never raises)."""
        if self._trends is None:
            return
        try:
            self._trends.submit(observations_from_rows([p.row for p in accepted]))
        except Exception as exc:  # a bug in building observations must not stop indexing
            self._metrics.trends_errors.inc()
            log.warning("trends step: batch not observed: %s: %s", type(exc).__name__, exc)

    async def _bump(self, fence: int | None) -> int | None:
        """Bump the epoch with ``fence``; owed (None) while Redis is away."""
        epoch = self._epoch
        assert epoch is not None
        # Without a fence, call bump() bare: epochs written for indexes that have none.
        bump = (lambda: epoch.bump(fence)) if fence else (lambda: epoch.bump())
        outage = self._outage
        if outage is None:
            return await retry_forever(lambda: self._run(bump), what="epoch bump")
        try:
            return int(await self._run(outage.attempt_sync, bump))
        except CircuitOpenError:
            self._owed.owe_bump(fence)
            return None

    @property
    def owed(self) -> dict[str, int]:
        """What an outage of Redis left to do (see :meth:`settle`)."""
        return self._owed.summary()

    async def settle(self) -> bool:
        """Pay what a Redis outage left owed, if Redis answers now: erasure checks first
        (an erased post's rows go), then the epoch bump, then the buffered matches. True
        when nothing is owed any more. Safe to call at any time (the worker's timer)."""
        outage, owed = self._outage, self._owed
        if outage is None or not owed:
            return True
        if outage.state == "open":
            return False
        self._settling = self._settling or asyncio.Lock()
        async with self._settling:
            try:
                await self._settle_erasures(outage)
                if owed.bump:  # with the fence of any deletion the checks just made, too
                    now = await self._run(self._get_index().write_fence)
                    epoch = await self._bump(max(owed.fence or 0, now or 0) or None)
                    if epoch is not None:
                        owed.bump_paid(epoch)
                if owed.matches and self._percolator is not None:
                    percolator, found = self._percolator, list(owed.matches)
                    new = await self._run(outage.attempt_sync, lambda: percolator.record(found))
                    owed.matches_paid(len(found), new)
                    self._metrics.matches.inc(new)
            except CircuitOpenError:
                return False
        return not owed

    async def _settle_erasures(self, outage: Outage) -> None:
        if not self._owed.checks or self._erasures is None:
            return
        ledger, ids = self._erasures, set(self._owed.checks)
        erased = await outage.attempt(lambda: ledger.erased(ids))
        if erased:
            index = self._get_index()
            await retry_forever(
                lambda: self._run(index.delete_posts, sorted(erased)), what="erasure of rows"
            )
            log.warning("removed %d post(s) erased before the outage", len(erased))
        self._owed.checks_paid(ids)

    async def _erased(self, ids: set[str]) -> set[str]:
        """Which of ``ids`` were erased; while Redis is away, none (the check is owed)."""
        assert self._erasures is not None
        ledger, outage = self._erasures, self._outage
        if outage is None:
            return await retry_forever(lambda: ledger.erased(ids), what="erasure check")
        try:
            return await outage.attempt(lambda: ledger.erased(ids))
        except CircuitOpenError:
            self._owed.owe_checks(ids)
            return set()

    async def _without_erased(self, pending: dict[str, _Pending]) -> dict[str, _Pending]:
        """Erase wins: records of posts erased while they were on their way are dropped."""
        if self._erasures is None or not pending:
            return pending
        erased = await self._erased({p.row.post_id for p in pending.values()})
        if not erased:
            return pending
        self._metrics.erased_dropped.inc(len(erased))
        log.info("not indexing %d erased post(s)", len(erased))
        return {k: p for k, p in pending.items() if p.row.post_id not in erased}

    async def _undo_raced_erasures(self, accepted: list[_Pending]) -> list[_Pending]:
        """An erasure that landed while this batch was being upserted deleted rows that did
        not exist yet: delete what the upsert just wrote of those posts, and notify nobody."""
        if self._erasures is None or not accepted:
            return accepted
        erased = await self._erased({p.row.post_id for p in accepted})
        if not erased:
            return accepted
        index = self._get_index()
        await retry_forever(
            lambda: self._run(index.delete_posts, sorted(erased)), what="erasure of raced rows"
        )
        log.info("removed %d post(s) erased during their upsert", len(erased))
        return [p for p in accepted if p.row.post_id not in erased]

    def _start_matching(self, rows: list[IndexRow]) -> asyncio.Future[list[Match]] | None:
        if self._percolator is None:
            return None
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._match_executor, self._match_rows, rows)

    def _match_rows(self, rows: list[IndexRow]) -> list[Match]:
        """Refresh the subscriptions (one Redis read) and match (blocking). With a breaker,
        Redis away: the subscriptions as last loaded."""
        percolator = self._percolator
        assert percolator is not None
        if self._outage is None:
            return percolator.match_batch(rows)
        try:
            self._outage.call(percolator.refresh)
        except CircuitOpenError:
            pass
        except CrossfeedError as exc:
            if not exc.retriable:
                raise
            log.debug("subscriptions not refreshed: %s", exc)
        return percolator.match(rows)

    async def _matches(
        self, accepted: list[_Pending], matching: asyncio.Future[list[Match]] | None
    ) -> list[Match]:
        """The matches of the accepted rows: those computed during the upsert, or (when
        that failed, e.g. Redis was briefly away) computed again now, until it works."""
        assert self._percolator is not None
        found: list[Match] | None = None
        if matching is not None:
            try:
                found = await matching
            except CrossfeedError as exc:
                log.warning("matching during the upsert failed, matching again: %s", exc)
        if found is None:
            rows = [p.row for p in accepted]
            again: list[Match] = await retry_forever(
                lambda: self._run(self._match_rows, rows), what="matching standing queries"
            )
            found = again
        taken = {p.row.row_id for p in accepted}  # rows the index refused notify nobody
        return [m for m in found if m.data.get("row_id") in taken]

    async def _after_accept(
        self, accepted: list[_Pending], matching: asyncio.Future[list[Match]] | None = None
    ) -> int:
        """Standing queries and freshness, once Milvus holds the rows (and the epoch moved,
        so a client told of a match finds the post by searching at once).

        A match must not be lost: Redis failures are retried until they pass, and the
        batch is acknowledged only afterwards (replays are deduplicated by the store).
        Freshness is informational: a failure to record it is logged, not retried.
        """
        rows = [p.row for p in accepted]
        matches = 0
        if self._percolator is not None:
            percolator = self._percolator
            started = time.perf_counter()
            found = await self._matches(accepted, matching)
            if found:
                matches = await self._record(percolator, found)
            self._metrics.percolate_seconds.observe(time.perf_counter() - started)
            self._metrics.matches.inc(matches)
        if self._freshness is not None and not (self._outage and self._outage.down):
            produced = [p.produced_ms for p in accepted if p.produced_ms is not None]
            freshness = self._freshness
            try:
                await self._run(
                    lambda: self._guarded(
                        freshness.record,
                        newest_event_ms=max(r.created_at_ms for r in rows),
                        oldest_produced_ms=min(produced) if produced else None,
                        rows=len(rows),
                        active_subscriptions=(
                            None if self._percolator is None else self._percolator.active
                        ),
                    )
                )
            except CircuitOpenError:
                pass  # Redis went away: freshness is informational
            except CrossfeedError as exc:
                log.warning("could not record index freshness: %s", exc)
        return matches

    def _guarded(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args)`` through the breaker when there is one (blocking)."""
        if self._outage is None:
            return fn(*args, **kwargs)
        return self._outage.call(fn, *args, **kwargs)

    async def _record(self, percolator: Percolator, found: list[Match]) -> int:
        """Record ``found``; while Redis is away, hold them (up to the buffer's bound)."""
        outage = self._outage
        if outage is None:
            return int(
                await retry_forever(
                    lambda: self._run(percolator.record, found), what="recording matches"
                )
            )
        if not self._owed.matches:  # else after those held (settle writes them first)
            try:
                return int(await self._run(outage.attempt_sync, lambda: percolator.record(found)))
            except CircuitOpenError:
                pass
        self._owed.hold(found)
        return 0

    async def _wanted_version(self) -> str | None:
        version = self._model_version
        if version is None or isinstance(version, str):
            return version
        return cast(str | None, await self._run(version))

    def _skip_foreign(self, version: str, wanted: str) -> None:
        self._metrics.index_skipped.labels(reason="other_version").inc()
        if version not in self._foreign_versions:
            self._foreign_versions.add(version)
            log.info(
                "not indexing vector records of model version %s: this index takes %s only",
                version,
                wanted,
            )

    async def _ensure_ready(self, dim: int) -> None:
        if dim in self._ready_dims:
            return
        index = await self._run(self._get_index)
        await retry_forever(lambda: self._run(index.ensure_ready, dim), what="index setup")
        self._ready_dims = {dim}

    async def _upsert(
        self, rows: list[_Pending], report: IndexReport, accepted: list[_Pending]
    ) -> int:
        """Upsert ``rows``; retriable errors retry forever, others bisect to the bad rows.
        The rows the index took are appended to ``accepted``."""

        async def attempt() -> int:
            await self._ensure_ready(len(rows[0].row.vector))
            index = await self._run(self._get_index)
            return int(await self._run(index.upsert, [p.row for p in rows]))

        try:
            written = await retry_forever(attempt, what=f"index upsert of {len(rows)} rows")
            accepted.extend(rows)
            return written
        except Exception as exc:
            if len(rows) == 1:
                row = rows[0].row
                await self._dead.send(
                    "index", f"index refused row {row.row_id}: {exc}", rows[0].payload, row.post_id
                )
                report.deadlettered += 1
                return 0
            log.warning("index refused a batch of %d rows (%s); narrowing down", len(rows), exc)
            mid = len(rows) // 2
            return await self._upsert(rows[:mid], report, accepted) + await self._upsert(
                rows[mid:], report, accepted
            )
