"""The semantic percolator: new index rows against every standing query, in one product.

The index stage calls :meth:`Percolator.percolate` with each batch Milvus accepted.
The active subscriptions of a model version are cached as one matrix ``Q`` (n x d,
unit rows) with a threshold vector; a batch's unit vectors ``V`` (m x d) are scored
against all of them at once (``V @ Q.T``), the pairs at or above their threshold are
checked against their subscription's filter (the index's own in-memory filter test,
:func:`crossfeed.indexer.filters.matches`, so a standing query filters exactly like a
search), and each (subscription, post) keeps its best row. The cache is rebuilt only
when the store's version counter moved (a subscription was created or deleted).

A subscription matches only rows of its own model version: vectors of another version
live in another space.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from crossfeed.indexer.base import IndexRow, SearchFilter
from crossfeed.indexer.exceptions import InvalidFilterError
from crossfeed.indexer.filters import matches, validate_filter
from crossfeed.live.base import Match, Subscription, SubscriptionFeed

log = logging.getLogger(__name__)

EVENT_TEXT_CHARS = 280


@dataclass
class _Bank:
    """The subscriptions of one model version and dimension, as matrices."""

    subs: list[Subscription]
    matrix: np.ndarray  # (n, d) float32, unit rows
    thresholds: np.ndarray  # (n,) float32
    filters: list[SearchFilter]
    plain: np.ndarray  # (n,) bool: the filter restricts nothing but the model version


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
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def event_payload(sub_id: str, row: IndexRow, score: float, matched_at_ms: int) -> dict[str, Any]:
    """What an SSE client receives about one match (JSON-able)."""
    moment = None
    if row.moment is not None and row.start_ms is not None and row.end_ms is not None:
        moment = {"index": row.moment, "start_s": row.start_ms / 1000, "end_s": row.end_ms / 1000}
    return {
        "subscription": sub_id,
        "post_id": row.post_id,
        "score": round(float(score), 6),
        "row_id": row.row_id,
        "modality": row.modality,
        "item": row.item,
        "moment": moment,
        "text": row.text[:EVENT_TEXT_CHARS],
        "tags": list(row.tags),
        "suggested_tags": list(row.suggested_tags),
        "created_at": _iso(row.created_at_ms),
        "matched_at": _iso(matched_at_ms),
    }


class Percolator:
    """Matches batches of new rows against the feed's subscriptions (thread-safe)."""

    def __init__(self, feed: SubscriptionFeed, *, clock: Callable[[], float] = time.time) -> None:
        self._feed = feed
        self._clock = clock
        self._version: int | None = None
        self._banks: dict[tuple[str, int], _Bank] = {}
        self._lock = threading.Lock()

    @property
    def active(self) -> int:
        return sum(len(b.subs) for b in self._banks.values())

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
            banks[key] = _Bank(
                subs=[s for s, _ in items],
                matrix=_unit(np.stack([np.asarray(s.vector, dtype=np.float32) for s, _ in items])),
                thresholds=np.asarray([s.min_score for s, _ in items], dtype=np.float32),
                filters=[f for _, f in items],
                plain=np.asarray([_plain(f) for _, f in items], dtype=bool),
            )
        with self._lock:
            self._banks = banks
            self._version = version
        log.info("percolator: %d active subscriptions (version %s)", self.active, version)
        return True

    def match(self, rows: Sequence[IndexRow]) -> list[Match]:
        """The matches of ``rows`` against the cached subscriptions (no I/O)."""
        with self._lock:
            banks = dict(self._banks)
        if not banks or not rows:
            return []
        now_ms = int(self._clock() * 1000)
        by_key: dict[tuple[str, int], list[IndexRow]] = {}
        for row in rows:
            by_key.setdefault((row.model_version, len(row.vector)), []).append(row)
        best: dict[tuple[str, str], tuple[float, IndexRow]] = {}
        for key, group in by_key.items():
            bank = banks.get(key)
            if bank is None:
                continue
            vectors = _unit(np.asarray([r.vector for r in group], dtype=np.float32))
            # (n, m): every subscription against every row, one product. Q @ V.T rather than
            # V @ Q.T: BLAS runs the tall operand faster (30 vs 43 ms for 10,000 x 384 x 32).
            scores = bank.matrix @ vectors.T
            sub_idx, row_idx = np.nonzero(scores >= bank.thresholds[:, None])
            for s, r in zip(sub_idx.tolist(), row_idx.tolist(), strict=True):
                row = group[r]
                if not bank.plain[s] and not matches(row, bank.filters[s]):
                    continue
                score = float(scores[s, r])
                pair = (bank.subs[s].id, row.post_id)
                held = best.get(pair)
                if held is None or score > held[0]:
                    best[pair] = (score, row)
        return [
            Match(sub_id, post_id, score, event_payload(sub_id, row, score, now_ms))
            for (sub_id, post_id), (score, row) in best.items()
        ]

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
