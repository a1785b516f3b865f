"""Where a tracker keeps its state: the interface and the in-memory store.

The tracker (:mod:`crossfeed.trends.tracker`) decides what to count; a store keeps
the counts so that several writers aggregate correctly: distinct authors per item per
window are sets, a count grows only when an author is new to the set (so a replayed
batch, or two workers seeing the same post, count once). :class:`MemoryStore` serves
unit tests and the offline eval; :class:`crossfeed.trends.redis_store.RedisStore`
serves a deployment (every API process and worker share it; TTLs bound it).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from crossfeed.trends.base import TrendSample
from crossfeed.trends.cluster import Codebook

BACKGROUND = "*"  # the terms item of all posts, the labels' background


@dataclass(frozen=True)
class Entry:
    """One author's attention to one item in one window, through one post."""

    window: int
    item: str  # "h:<tag>" or "c:<cluster id>"
    author: str
    member: str  # the post id trend-scoped search returns (a repost's original)


def first_unique(groups: Iterable[Iterable[str]], limit: int) -> list[str]:
    """The first ``limit`` distinct ids of ``groups`` taken in order (newest window first)."""
    out: list[str] = []
    seen: set[str] = set()
    for group in groups:
        for pid in group:
            if pid not in seen:
                seen.add(pid)
                out.append(pid)
                if len(out) >= limit:
                    return out
    return out


class TrendStore(ABC):
    @abstractmethod
    def add(self, entries: Sequence[Entry], ttl_s: float) -> None:
        """Record entries; an author counts once per (window, item)."""

    @abstractmethod
    def counts(self, windows: Sequence[int]) -> list[dict[str, int]]:
        """Distinct authors per item, one mapping per window, in the order asked."""

    @abstractmethod
    def members(self, item: str, windows: Sequence[int], limit: int) -> list[str]:
        """Post ids counted for ``item`` in ``windows`` (newest window first)."""

    @abstractmethod
    def put_samples(self, samples: Sequence[TrendSample], ttl_s: float) -> None: ...

    @abstractmethod
    def samples(self, post_ids: Sequence[str]) -> list[TrendSample]: ...

    @abstractmethod
    def add_terms(self, rows: Sequence[tuple[int, str, Sequence[str]]], ttl_s: float) -> None:
        """``(window, item, terms)`` rows: term counts per cluster and for BACKGROUND."""

    @abstractmethod
    def terms(self, item: str, windows: Sequence[int]) -> Counter[str]: ...

    @abstractmethod
    def advance_watermark(self, event_time: float) -> float:
        """Raise the newest event time seen to ``event_time`` if later; return it."""

    @abstractmethod
    def watermark(self) -> float | None: ...

    @abstractmethod
    def first_window(self, window: int) -> int:
        """The first window any writer saw (set once, from ``window``)."""

    @abstractmethod
    def mark_detected(self, item: str, event_time: float, ttl_s: float) -> float:
        """When ``item`` was first flagged in its current run of bursts (set if absent)."""

    @abstractmethod
    def detected(self, item: str) -> float | None: ...

    @abstractmethod
    def set_cluster_of(self, mapping: Mapping[str, int], ttl_s: float) -> None: ...

    @abstractmethod
    def cluster_of(self, post_ids: Sequence[str]) -> dict[str, int]: ...

    @abstractmethod
    @contextmanager
    def codebook(self) -> Iterator[Codebook]:
        """The shared clusters, locked for this writer; changes are written back on exit
        (the caller lists them in ``Codebook.changed`` / ``removed``)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class MemoryStore(TrendStore):
    """Everything in dictionaries; expiry by event time (the newest window written)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._authors: dict[tuple[int, str], set[str]] = defaultdict(set)
        self._counts: dict[int, Counter[str]] = defaultdict(Counter)
        self._members: dict[tuple[int, str], list[str]] = defaultdict(list)
        self._terms: dict[tuple[int, str], Counter[str]] = defaultdict(Counter)
        self._samples: dict[str, tuple[TrendSample, float]] = {}
        self._cluster_of: dict[str, tuple[int, float]] = {}
        self._detected: dict[str, tuple[float, float]] = {}
        self._watermark: float | None = None
        self._first: int | None = None
        self._codebook = Codebook()
        self.member_cap = 2000

    def _expire(self, ttl_s: float) -> None:
        """Drop what is older than ``ttl_s`` of event time before the watermark."""
        if self._watermark is None:
            return
        horizon = self._watermark - ttl_s
        for store in (self._samples, self._cluster_of):
            stale = [k for k, (_, t) in store.items() if t < horizon]
            for k in stale:
                del store[k]

    def _prune_windows(self, newest: int, keep: int) -> None:
        old = newest - keep
        for w in [w for w in self._counts if w < old]:
            del self._counts[w]
        for d in (self._authors, self._members, self._terms):
            for key in [k for k in d if k[0] < old]:
                del d[key]

    def add(self, entries: Sequence[Entry], ttl_s: float) -> None:
        with self._lock:
            for e in entries:
                authors = self._authors[(e.window, e.item)]
                if e.author not in authors:
                    authors.add(e.author)
                    self._counts[e.window][e.item] += 1
                members = self._members[(e.window, e.item)]
                if len(members) < self.member_cap and e.member not in members:
                    members.append(e.member)

    def prune(self, newest_window: int, keep_windows: int, ttl_s: float) -> None:
        with self._lock:
            self._prune_windows(newest_window, keep_windows)
            self._expire(ttl_s)
            now = self._watermark or 0.0
            for k in [k for k, (_, exp) in self._detected.items() if exp < now]:
                del self._detected[k]

    def counts(self, windows: Sequence[int]) -> list[dict[str, int]]:
        """The store's own mappings (no copies: the eval reads thousands); do not mutate."""
        empty: dict[str, int] = {}
        with self._lock:
            return [self._counts.get(w, empty) for w in windows]

    def members(self, item: str, windows: Sequence[int], limit: int) -> list[str]:
        with self._lock:
            groups = [list(self._members.get((w, item), [])) for w in sorted(windows, reverse=True)]
        return first_unique(groups, limit)

    def put_samples(self, samples: Sequence[TrendSample], ttl_s: float) -> None:
        with self._lock:
            t = self._watermark or 0.0
            for s in samples:
                self._samples[s.post_id] = (s, t)

    def samples(self, post_ids: Sequence[str]) -> list[TrendSample]:
        with self._lock:
            return [self._samples[p][0] for p in post_ids if p in self._samples]

    def add_terms(self, rows: Sequence[tuple[int, str, Sequence[str]]], ttl_s: float) -> None:
        with self._lock:
            for window, item, words in rows:
                self._terms[(window, item)].update(words)

    def terms(self, item: str, windows: Sequence[int]) -> Counter[str]:
        out: Counter[str] = Counter()
        with self._lock:
            for w in windows:
                out.update(self._terms.get((w, item), {}))
        return out

    def advance_watermark(self, event_time: float) -> float:
        with self._lock:
            if self._watermark is None or event_time > self._watermark:
                self._watermark = event_time
            return self._watermark

    def watermark(self) -> float | None:
        return self._watermark

    def first_window(self, window: int) -> int:
        with self._lock:
            if self._first is None:
                self._first = window
            return self._first

    def mark_detected(self, item: str, event_time: float, ttl_s: float) -> float:
        with self._lock:
            now = self._watermark if self._watermark is not None else event_time
            got = self._detected.get(item)
            if got is None or got[1] < now:
                got = (event_time, 0.0)
            self._detected[item] = (got[0], now + ttl_s)
            return got[0]

    def detected(self, item: str) -> float | None:
        with self._lock:
            got = self._detected.get(item)
            now = self._watermark or 0.0
            return got[0] if got is not None and got[1] >= now else None

    def set_cluster_of(self, mapping: Mapping[str, int], ttl_s: float) -> None:
        with self._lock:
            t = self._watermark or 0.0
            for pid, cid in mapping.items():
                self._cluster_of[pid] = (cid, t)

    def cluster_of(self, post_ids: Sequence[str]) -> dict[str, int]:
        with self._lock:
            return {p: self._cluster_of[p][0] for p in post_ids if p in self._cluster_of}

    @contextmanager
    def codebook(self) -> Iterator[Codebook]:
        with self._lock:
            yield self._codebook
            self._codebook.changed.clear()
            self._codebook.removed.clear()
