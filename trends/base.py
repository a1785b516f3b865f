"""The trends seam: what the stream observes, what readers see, and the tracker between.

Writers (the stream's trends step, the ``crossfeed eval trends`` replay) call
:meth:`TrendTracker.observe` with batches of :class:`Observation` in roughly
event-time order; readers (the API, the dashboard, the client) call
:meth:`TrendTracker.current`, :meth:`TrendTracker.get` and
:meth:`TrendTracker.member_ids`. The eval and the stream run the same tracker
code; only where the state lives differs (Redis in a deployment, so every API
process and worker sees the same counts and a worker restart keeps them; memory
for unit tests and the offline eval).

Event time (``created_at``) decides the window, never arrival time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

TrendKind = Literal["hashtag", "cluster"]
KINDS: tuple[TrendKind, ...] = ("hashtag", "cluster")


@dataclass(frozen=True)
class Observation:
    """One post as the trends step sees it.

    ``vector`` is the post's unit vector in the serving model version's space (its text
    row, or its first media row for a post without text), shape ``(dim,)``, or ``None``
    when the post was not embedded (a repost: ``duplicate_of`` names the original, and the
    repost counts as attention for the original, once per author).
    """

    post_id: str
    author: str
    created_at: float  # event time, unix seconds
    hashtags: tuple[str, ...] = ()  # normalized (core.text), de-duplicated
    vector: np.ndarray | None = None
    duplicate_of: str | None = None
    text: str = ""  # clean text, for labels and samples
    media_ref: str | None = None  # a fetchable or thumbnail reference, for samples


@dataclass(frozen=True)
class TrendSample:
    post_id: str
    text: str = ""
    media_ref: str | None = None


@dataclass(frozen=True)
class TrendView:
    """A trend as readers see it (the API builds its response model from this)."""

    id: str  # stable while the trend lasts: "h:<tag>" for hashtags, "c:<cluster id>" for clusters
    kind: TrendKind
    label: str  # the hashtag; for a cluster, its most telling tags/words
    score: float  # burst score of the current window against the item's own baseline
    rate: float  # distinct authors in the current window
    baseline: float  # the item's expected distinct authors per window
    series: list[int]  # distinct authors per window, oldest first, the current window last
    first_detected: float  # unix seconds (event time) the burst was first flagged
    window_s: float
    window_start: float  # event time the current window starts
    samples: list[TrendSample] = field(default_factory=list)


class TrendTracker(ABC):
    """Counts, baselines and bursts per hashtag and per cluster of the shared space."""

    @abstractmethod
    def observe(self, batch: Sequence[Observation]) -> None:
        """Count a batch (idempotent per (post, author): a replayed batch counts once)."""

    @abstractmethod
    def current(
        self, *, kind: TrendKind | None = None, limit: int = 20, now: float | None = None
    ) -> list[TrendView]:
        """Bursting items, highest score first; ``kind=None`` means both kinds.

        ``now`` (event time) defaults to the newest event time observed.
        """

    @abstractmethod
    def get(self, trend_id: str) -> TrendView | None:
        """One trend (current or recently flagged), or ``None`` for an unknown id."""

    @abstractmethod
    def member_ids(self, trend_id: str, limit: int = 10_000) -> list[str]:
        """Post ids of the trend's recent posts (for trend-scoped search); ``[]`` if unknown."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
