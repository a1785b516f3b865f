"""The tracker: counts distinct authors per hashtag and per cluster, scores bursts.

One implementation for the stream and the eval; the state lives in a
:class:`~crossfeed.trends.store.TrendStore` (memory or Redis).

- **What counts**: distinct authors per item per event-time window
  (``floor(created_at / window_s)``); one account posting 200 times counts once.
- **Reposts** (``duplicate_of``) count for the original: its hashtags and the
  original's cluster, once per reposting author; trend-scoped search gets the original.
- **Late posts**: a post older than the newest event time seen minus ``late_s`` is
  dropped (``dropped_late`` counts them); within the allowance it lands in its own window.
- **Stop tags**: generic tags (``fyp``, ``instagood``...) are never hashtag trends.
- **Bursts** (:mod:`crossfeed.trends.score`): the latest window, and the one before it
  (a window just begun has few posts yet), against the item's own baseline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from crossfeed.trends.base import (
    KINDS,
    Observation,
    TrendKind,
    TrendSample,
    TrendTracker,
    TrendView,
)
from crossfeed.trends.cluster import ClusterParams, OnlineClusterer
from crossfeed.trends.exceptions import InvalidTrendQueryError
from crossfeed.trends.labels import label_of, terms
from crossfeed.trends.score import Burst, BurstParams, burst
from crossfeed.trends.store import BACKGROUND, Entry, MemoryStore, TrendStore

if TYPE_CHECKING:
    from crossfeed.core.settings import Settings

# Generic tags never trend as hashtags (normalized forms: "instagood" -> "insta good").
STOP_TAGS = frozenset(
    (
        "fyp", "for you", "for you page", "insta good", "insta daily", "photo of the day",
        "pic of the day", "no filter", "viral", "trending", "explore", "follow", "follow me",
        "follow 4 follow", "like 4 like", "like for like", "tbt", "love", "mood", "vibes", "art",
        "weekend", "blessed",
    )
)  # fmt: skip
LABEL_WINDOWS = 3  # a cluster's label: its terms over the last windows...
BACKGROUND_WINDOWS = 15  # ...against everyone's over these


@dataclass(frozen=True)
class TrackerParams:
    window_s: float = 60.0
    late_s: float = 120.0
    history_windows: int = 60
    burst: BurstParams = field(default_factory=BurstParams)
    cluster: ClusterParams = field(default_factory=ClusterParams)
    stop_tags: frozenset[str] = STOP_TAGS
    samples: int = 3

    @property
    def ttl_s(self) -> float:
        """How long counts are kept: the history, plus the late allowance, plus slack."""
        return (self.history_windows + 3) * self.window_s + self.late_s

    def window_of(self, t: float) -> int:
        return math.floor(t / self.window_s)


def parse_trend_id(trend_id: str) -> tuple[TrendKind, str] | None:
    """``"h:<tag>"`` -> ("hashtag", item); ``"c:<n>"`` -> ("cluster", item); else None."""
    if not isinstance(trend_id, str) or len(trend_id) > 300:
        return None
    if trend_id.startswith("h:") and len(trend_id) > 2:
        return "hashtag", trend_id
    if trend_id.startswith("c:") and trend_id[2:].isdigit():
        return "cluster", trend_id
    return None


class StoreTracker(TrendTracker):
    def __init__(self, store: TrendStore, params: TrackerParams | None = None) -> None:
        self.store = store
        self.params = params or TrackerParams()
        self.clusterer = OnlineClusterer(self.params.cluster)
        self.dropped_late = 0

    # ----------------------------------------------------------------- writing

    def _clusters(self, batch: Sequence[Observation]) -> dict[str, int]:
        """Cluster id per post id: known ones reused (a replay moves nothing), new ones
        assigned in event-time order, reposts take their original's."""
        p = self.params
        wanted = {o.post_id for o in batch if o.vector is not None and not o.duplicate_of}
        wanted |= {o.duplicate_of for o in batch if o.duplicate_of}
        known = self.store.cluster_of(sorted(wanted)) if wanted else {}
        fresh = [
            o
            for o in sorted(batch, key=lambda o: (o.created_at, o.post_id))
            if o.vector is not None and not o.duplicate_of and o.post_id not in known
        ]
        assigned: dict[str, int] = {}
        if fresh:
            with self.store.codebook() as codebook:
                self.clusterer.load(codebook)
                for o in fresh:
                    if o.post_id in assigned:
                        continue
                    vec = np.asarray(o.vector, dtype=np.float32)
                    assigned[o.post_id] = self.clusterer.assign(vec, p.window_of(o.created_at))
            self.store.set_cluster_of(assigned, p.ttl_s)
        return {**known, **assigned}

    def observe(self, batch: Sequence[Observation]) -> None:
        p = self.params
        batch = [o for o in batch if math.isfinite(o.created_at) and o.post_id and o.author]
        if not batch:
            return
        newest = max(o.created_at for o in batch)
        mark = self.store.watermark()
        cutoff = max(newest, mark if mark is not None else newest) - p.late_s
        kept = [o for o in batch if o.created_at >= cutoff]
        self.dropped_late += len(batch) - len(kept)
        if not kept:
            return
        self.store.advance_watermark(newest)
        cluster = self._clusters(kept)
        entries: list[Entry] = []
        rows: list[tuple[int, str, Sequence[str]]] = []
        samples: list[TrendSample] = []
        for o in kept:
            w = p.window_of(o.created_at)
            member = o.duplicate_of or o.post_id
            for tag in dict.fromkeys(o.hashtags):
                if tag and tag not in p.stop_tags:
                    entries.append(Entry(w, f"h:{tag}", o.author, member))
            cid = cluster.get(member)
            if cid is not None:
                entries.append(Entry(w, f"c:{cid}", o.author, member))
            if not o.duplicate_of:
                words = terms(o.text, o.hashtags)
                rows.append((w, BACKGROUND, words))
                if cid is not None:
                    rows.append((w, f"c:{cid}", words))
                samples.append(TrendSample(o.post_id, o.text[:280], o.media_ref))
        self.store.first_window(min(p.window_of(o.created_at) for o in kept))
        self.store.add(entries, p.ttl_s)
        self.store.add_terms(rows, p.ttl_s)
        self.store.put_samples(samples, p.ttl_s)
        if isinstance(self.store, MemoryStore):
            self.store.prune(p.window_of(newest), p.history_windows + 3, p.ttl_s)

    # ----------------------------------------------------------------- reading

    def _windows(self, now: float | None) -> list[int] | None:
        if now is None:
            now = self.store.watermark()
        if now is None:
            return None
        p = self.params
        w = p.window_of(now)
        first = min(self.store.first_window(w), w)
        return list(range(max(first, w - p.history_windows - 1), w + 1))

    def _score(self, series: list[int]) -> tuple[Burst, int]:
        """The better of the last window and the one before; (burst, offset from last)."""
        b = self.params.burst
        last = burst(series[-1], series[:-1], b)
        if len(series) >= 2:
            prev = burst(series[-2], series[:-2], b)
            if prev.bursting and (not last.bursting or prev.score > last.score):
                return prev, 1
        return last, 0

    def _view(
        self,
        item: str,
        kind: TrendKind,
        series: list[int],
        windows: list[int],
        b: Burst,
        offset: int,
        flag: bool,
    ) -> TrendView:
        p = self.params
        scored = windows[-1 - offset]
        start = scored * p.window_s
        if flag:
            first = self.store.mark_detected(item, start, ttl_s=2 * p.window_s)
        else:
            first = self.store.detected(item) or start
        if kind == "hashtag":
            label = item[2:]
        else:
            label = label_of(
                self.store.terms(item, windows[-LABEL_WINDOWS:]),
                self.store.terms(BACKGROUND, windows[-BACKGROUND_WINDOWS:]),
            )
        members = self.store.members(item, [scored], p.samples)
        return TrendView(
            id=item,
            kind=kind,
            label=label,
            score=round(b.score, 3),
            rate=b.rate,
            baseline=round(b.baseline, 3),
            series=series[-p.history_windows :],
            first_detected=first,
            window_s=p.window_s,
            window_start=start,
            samples=self.store.samples(members),
        )

    def current(
        self, *, kind: TrendKind | None = None, limit: int = 20, now: float | None = None
    ) -> list[TrendView]:
        if kind is not None and kind not in KINDS:
            raise InvalidTrendQueryError(f"kind must be one of {KINDS} or None, not {kind!r}")
        if not 1 <= limit <= 1000:
            raise InvalidTrendQueryError("limit must be between 1 and 1000")
        windows = self._windows(now)
        if windows is None:
            return []
        counts = self.store.counts(windows)
        floor = self.params.burst.min_authors
        candidates = {i for c in counts[-2:] for i, x in c.items() if x >= floor}
        found: list[tuple[float, str, TrendKind, list[int], Burst, int]] = []
        for item in sorted(candidates):
            k: TrendKind = "hashtag" if item.startswith("h:") else "cluster"
            if kind is not None and k != kind:
                continue
            series = [c.get(item, 0) for c in counts]
            b, offset = self._score(series)
            if b.bursting:
                found.append((b.score, item, k, series, b, offset))
        found.sort(key=lambda f: (-f[0], f[1]))
        return [self._view(i, k, s, windows, b, o, True) for _, i, k, s, b, o in found[:limit]]

    def get(self, trend_id: str) -> TrendView | None:
        parsed = parse_trend_id(trend_id)
        windows = self._windows(None)
        if parsed is None or windows is None:
            return None
        kind, item = parsed
        series = [c.get(item, 0) for c in self.store.counts(windows)]
        b, offset = self._score(series)
        if not b.bursting and self.store.detected(item) is None:
            return None
        return self._view(item, kind, series, windows, b, offset, b.bursting)

    def member_ids(self, trend_id: str, limit: int = 10_000) -> list[str]:
        view = self.get(trend_id)
        if view is None:
            return []
        p = self.params
        windows = self._windows(None) or []
        since = p.window_of(view.first_detected) - 1
        return self.store.members(view.id, [w for w in windows if w >= since], limit)

    def close(self) -> None:
        self.store.close()


def params_from_settings(settings: Settings, **overrides: Any) -> TrackerParams:
    t = settings.trends
    cluster = ClusterParams(max_clusters=t.max_clusters, seed=t.seed)
    base = TrackerParams(
        window_s=t.window_s, late_s=t.late_s, history_windows=t.history_windows, cluster=cluster
    )
    return TrackerParams(**{**base.__dict__, **overrides})


def open_tracker(
    settings: Settings, redis_client: Any = None, *, prefix: str | None = None
) -> StoreTracker:
    """The tracker a deployment uses: state in Redis under ``<key prefix>:trends`` (or
    ``prefix``); ``redis_client=None`` keeps it in memory (tests, one process)."""
    params = params_from_settings(settings)
    if redis_client is None:
        return StoreTracker(MemoryStore(), params)
    from crossfeed.trends.redis_store import RedisStore

    key_prefix = prefix or f"{settings.redis.key_prefix}:trends"
    return StoreTracker(RedisStore(redis_client, key_prefix), params)
