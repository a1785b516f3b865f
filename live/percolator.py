"""The semantic percolator: new index rows against every standing query.

The index stage calls :meth:`Percolator.percolate` with each batch Milvus accepted.
The active subscriptions of a model version are cached as one matrix ``Q`` (n x d,
unit float32 rows) with their thresholds. A batch's unit vectors ``V`` (m x d) are
matched in two stages that find exactly the pairs whose cosine is at or above the
subscription's ``min_score``, with their exact score:

1. a first pass (:mod:`crossfeed.live.screen`: an int8 product for big banks, the
   float32 one for small) gives approximate scores with a rigorous error bound and
   keeps the subscriptions that may hold a match (a tenth of them on real vectors);
2. those are scored in float64 (the exact cosine of the stored float32 vectors),
   compared with their threshold, and each candidate pair is checked against its
   subscription's filter (the index's own in-memory test,
   :func:`crossfeed.indexer.filters.matches`, so a standing query filters exactly like a
   search); each (subscription, post) keeps its best row.

Every exactly scored pair also checks the first pass's bound; a violation logs an
error, scores that batch exactly against every subscription, and turns the int8 pass
off for good (later batches go through the float32 pass).

Products run with ``blas_threads`` BLAS and OpenMP threads
(``CROSSFEED_PERCOLATOR_THREADS``, default 1): OpenBLAS defaults to a thread per core,
which on a small shared box spins against Milvus and the encoders (13 vs 8 ms a float32
product of 10,000 x 384 x 32 here), and so did the int8 kernel's OpenMP team when called
from the index stage's matching thread (see :func:`_blas_threads`).

The cache is rebuilt only when the store's version counter moved (a subscription was
created or deleted). A subscription matches only rows of its own model version:
vectors of another version live in another space.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from crossfeed.indexer.base import IndexRow, SearchFilter
from crossfeed.indexer.exceptions import InvalidFilterError
from crossfeed.indexer.filters import matches, validate_filter
from crossfeed.live.base import Match, Subscription, SubscriptionFeed
from crossfeed.live.screen import SCREEN_MIN, Int8Pass, fp32_pass, int8_pass

log = logging.getLogger(__name__)

EVENT_TEXT_CHARS = 280


@dataclass
class _Bank:
    """The subscriptions of one model version and dimension, as matrices."""

    subs: list[Subscription]
    matrix: np.ndarray  # (n, d) float32, unit rows, C order
    thresholds: np.ndarray  # (n,) float64: min_score as stored
    filters: list[SearchFilter]
    plain: np.ndarray  # (n,) bool: the filter restricts nothing but the model version
    screen: Int8Pass | None = field(default=None)


def _plain(flt: SearchFilter) -> bool:
    return not (
        flt.modalities
        or flt.since_ms is not None
        or flt.until_ms is not None
        or flt.tags
        or flt.lang is not None
        or flt.exclude_post_ids
    )


def _unit(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.ascontiguousarray(matrix / np.maximum(norms, 1e-12), dtype=np.float32)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def _row_payload(row: IndexRow) -> dict[str, Any]:
    """The part of an event payload that depends on the row only."""
    moment = None
    if row.moment is not None and row.start_ms is not None and row.end_ms is not None:
        moment = {"index": row.moment, "start_s": row.start_ms / 1000, "end_s": row.end_ms / 1000}
    return {
        "post_id": row.post_id,
        "row_id": row.row_id,
        "modality": row.modality,
        "item": row.item,
        "moment": moment,
        "text": row.text[:EVENT_TEXT_CHARS],
        "tags": list(row.tags),
        "suggested_tags": list(row.suggested_tags),
        "created_at": _iso(row.created_at_ms),
    }


def _payload(sub_id: str, base: dict[str, Any], score: float, matched_at: str) -> dict[str, Any]:
    return {
        "subscription": sub_id,
        **base,
        "score": round(float(score), 6),
        "tags": list(base["tags"]),
        "suggested_tags": list(base["suggested_tags"]),
        "matched_at": matched_at,
    }


def event_payload(sub_id: str, row: IndexRow, score: float, matched_at_ms: int) -> dict[str, Any]:
    """What an SSE client receives about one match (JSON-able)."""
    return _payload(sub_id, _row_payload(row), score, _iso(matched_at_ms))


_controller: Any = None


@contextlib.contextmanager
def _blas_threads(threads: int) -> Iterator[None]:
    """BLAS and OpenMP (the int8 kernel's) calls inside run with ``threads`` threads
    (0: the libraries' defaults).

    OpenMP's thread count is per calling thread: in a thread torch did not start (the
    index stage's matching thread) the int8 kernel ran a team of one thread per core
    whose idle member spun, ~9 ms of CPU per batch of 32 here (found by per-thread CPU
    accounting; OMP_NUM_THREADS=1 made it vanish)."""
    global _controller
    if threads <= 0:
        yield
        return
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    with _controller.limit(limits=threads):  # every BLAS and OpenMP library loaded
        yield


class Percolator:
    """Matches batches of new rows against the feed's subscriptions (thread-safe).

    ``screen``: use the int8 first pass on banks of at least ``SCREEN_MIN``
    subscriptions (exact either way; see the module doc). ``blas_threads``: threads of
    the BLAS products (0 = the library's default, one per core).
    """

    def __init__(
        self,
        feed: SubscriptionFeed,
        *,
        clock: Callable[[], float] = time.time,
        screen: bool = True,
        blas_threads: int = 1,
    ) -> None:
        self._feed = feed
        self._clock = clock
        self._screen = screen
        self._blas = blas_threads
        self._version: int | None = None
        self._banks: dict[tuple[str, int], _Bank] = {}
        self._lock = threading.Lock()

    @property
    def active(self) -> int:
        return sum(len(b.subs) for b in self._banks.values())

    @property
    def screened(self) -> bool:
        """Whether some bank is matched through the int8 first pass."""
        return any(b.screen is not None for b in self._banks.values())

    def refresh(self) -> bool:
        """Reload the subscriptions when the store's version moved; True when reloaded."""
        version = self._feed.version()
        if version == self._version and version >= 0:
            return False
        subs = self._feed.load()
        groups: dict[tuple[str, int], list[tuple[Subscription, SearchFilter]]] = {}
        for sub in subs:
            try:
                flt = validate_filter(sub.filter)
            except InvalidFilterError as exc:
                log.warning("subscription %s has an unusable filter, skipped: %s", sub.id, exc)
                continue
            vector = np.asarray(sub.vector, dtype=np.float32).reshape(-1)
            if vector.size == 0 or not np.isfinite(vector).all():
                log.warning("subscription %s has no usable vector, skipped", sub.id)
                continue
            groups.setdefault((sub.model_version, vector.size), []).append((sub, flt))
        banks = {}
        for key, items in groups.items():
            matrix = _unit(np.stack([np.asarray(s.vector, dtype=np.float32) for s, _ in items]))
            banks[key] = _Bank(
                subs=[s for s, _ in items],
                matrix=matrix,
                thresholds=np.asarray([s.min_score for s, _ in items], dtype=np.float64),
                filters=[f for _, f in items],
                plain=np.asarray([_plain(f) for _, f in items], dtype=bool),
                screen=int8_pass(matrix) if self._screen and len(items) >= SCREEN_MIN else None,
            )
        with self._lock:
            self._banks = banks
            self._version = version
        log.info("percolator: %d active subscriptions (version %s)", self.active, version)
        return True

    def _scores(self, bank: _Bank, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The subscriptions that may match some row, and their exact scores ``(k, m)``."""
        with _blas_threads(self._blas):
            screen = bank.screen
            approx, bound = (
                screen.scores(vectors) if screen is not None else fp32_pass(bank.matrix, vectors)
            )
            # A subscription whose best approximate score is below its threshold minus
            # the bound has no pair at or above its threshold.
            kept = np.flatnonzero(approx.max(axis=1) >= bank.thresholds - bound)
            exact = bank.matrix[kept].astype(np.float64) @ vectors.T.astype(np.float64)
            if np.all(np.abs(exact - approx[kept]) <= bound[kept, None]):
                return kept, exact
            log.error(
                "percolator: the %s first pass broke its error bound; matching this bank "
                "with the float32 pass from now on",
                "int8" if screen is not None else "float32",
            )
            bank.screen = None
            everything = np.arange(len(bank.subs))
            return everything, bank.matrix.astype(np.float64) @ vectors.T.astype(np.float64)

    def match(self, rows: Sequence[IndexRow]) -> list[Match]:
        """The matches of ``rows`` against the cached subscriptions (no I/O)."""
        with self._lock:
            banks = dict(self._banks)
        if not banks or not rows:
            return []
        matched_at = _iso(int(self._clock() * 1000))
        by_key: dict[tuple[str, int], list[IndexRow]] = {}
        for row in rows:
            by_key.setdefault((row.model_version, len(row.vector)), []).append(row)
        best: dict[tuple[str, str], tuple[float, IndexRow]] = {}
        for key, group in by_key.items():
            bank = banks.get(key)
            if bank is None:
                continue
            vectors = np.asarray([r.vector for r in group], dtype=np.float32)
            finite = np.asarray(np.isfinite(vectors).all(axis=1), dtype=bool)
            if not finite.all():  # such a row matches nothing (and would poison the bound)
                group = [r for r, ok in zip(group, list(finite), strict=True) if ok]
                vectors = vectors[finite]
                if not group:
                    continue
            vectors = _unit(vectors)
            kept, exact = self._scores(bank, vectors)
            sub_idx, row_idx = np.nonzero(exact >= bank.thresholds[kept, None])
            for k, r in zip(sub_idx.tolist(), row_idx.tolist(), strict=True):
                s = int(kept[k])
                row = group[r]
                if not bank.plain[s] and not matches(row, bank.filters[s]):
                    continue
                score = float(exact[k, r])
                pair = (bank.subs[s].id, row.post_id)
                held = best.get(pair)
                if held is None or score > held[0]:
                    best[pair] = (score, row)
        bases: dict[int, dict[str, Any]] = {}
        found = []
        for (sub_id, post_id), (score, row) in best.items():
            base = bases.get(id(row))
            if base is None:
                base = bases[id(row)] = _row_payload(row)
            found.append(Match(sub_id, post_id, score, _payload(sub_id, base, score, matched_at)))
        return found

    def match_batch(self, rows: Sequence[IndexRow]) -> list[Match]:
        """Refresh if needed (one Redis read), then :meth:`match` (blocking)."""
        self.refresh()
        return self.match(rows)

    def record(self, matches: Sequence[Match]) -> int:
        """Record ``matches`` (deduplicated by the store); how many were new."""
        return self._feed.record(matches) if matches else 0

    def percolate(self, rows: Sequence[IndexRow]) -> int:
        """Refresh if needed, match ``rows`` and record the matches; how many were new.

        Blocking (Redis): call it from a worker thread. Redis failures propagate as
        :class:`~crossfeed.live.exceptions.LiveUnavailableError` (retriable).
        """
        self.refresh()
        found = self.match(rows)
        return self._feed.record(found) if found else 0
