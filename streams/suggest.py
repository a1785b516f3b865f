"""The optional translation step of the embed stage: tags for untagged media.

When ``CROSSFEED_SUGGEST_TAGS`` is on, every image and video of a post that
carries no hashtags gets up to ``suggest_top_k`` proposed tags, from its
nearest already-indexed posts of the same model version (and the head's tag
posterior when the head is a tag space): the recipe of ``POST
/v1/suggest-tags``, :func:`crossfeed.retrieval.suggest.suggest_tags_for_media`,
cut at ``suggest_min_score`` by :func:`~crossfeed.retrieval.suggest.emitted_tags`
(the cut the evaluation scores). They travel on the vector record as
``suggested_tags`` and are stored beside, never inside, the author's tags.

Suggestions are derived data that the API can recompute at any time, so this
step is best effort: when the index cannot be searched the item is embedded
and indexed without suggestions, and the step pauses for ``pause_s`` rather
than wait out one index timeout per item (which would stall the partition).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from crossfeed.core.schema import CleanPost
from crossfeed.core.settings import Settings, StreamSettings
from crossfeed.indexer.base import VectorIndex
from crossfeed.retrieval.suggest import emitted_tags, suggest_tags_for_media
from crossfeed.streams.metrics import WorkerMetrics

log = logging.getLogger(__name__)

_STREAM_DEFAULTS = StreamSettings.model_fields


@dataclass(frozen=True)
class SuggestConfig:
    """The defaults are ``StreamSettings.suggest_*``'s, which say why each was chosen."""

    top_k: int = _STREAM_DEFAULTS["suggest_top_k"].default
    min_score: float = _STREAM_DEFAULTS["suggest_min_score"].default
    neighbours: int = _STREAM_DEFAULTS["suggest_neighbours"].default
    pause_s: float = 30.0  # after an index failure; long enough for an engine restart

    @classmethod
    def from_settings(cls, settings: Settings) -> SuggestConfig:
        s = settings.stream
        return cls(
            top_k=s.suggest_top_k, min_score=s.suggest_min_score, neighbours=s.suggest_neighbours
        )


class TagSuggestStep:
    """Proposes tags for one media vector at a time (blocking; the stage runs it in its pool)."""

    def __init__(
        self,
        index: VectorIndex | Callable[[], VectorIndex],
        metrics: WorkerMetrics,
        config: SuggestConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._index: VectorIndex | None = index if isinstance(index, VectorIndex) else None
        self._factory = None if isinstance(index, VectorIndex) else index
        self._metrics = metrics
        self.config = config or SuggestConfig()
        self._clock = clock
        self._ready_dim: int | None = None
        self._paused_until = 0.0
        self._lock = threading.Lock()

    @staticmethod
    def wants(clean: CleanPost) -> bool:
        """Only posts whose author gave no hashtag get suggestions."""
        return not clean.hashtags

    def _ready_index(self, dim: int) -> VectorIndex:
        with self._lock:
            if self._index is None:
                assert self._factory is not None
                self._index = self._factory()
            if self._ready_dim != dim:
                self._index.ensure_ready(dim)
                self._ready_dim = dim
            return self._index

    def suggest(
        self,
        vector: Sequence[float],
        *,
        post_id: str,
        modality: str,
        model_version: str,
        posterior: Mapping[str, float] | None = None,
    ) -> list[str]:
        """Suggested tags, best first; [] when none is backed well enough or the index failed."""
        if self._clock() < self._paused_until:
            return []
        cfg = self.config
        try:
            index = self._ready_index(len(vector))
            suggestions, _ = suggest_tags_for_media(
                index,
                vector,
                model_version=model_version,
                posterior=posterior,
                neighbours=cfg.neighbours,
                exclude_post_ids=(post_id,),
                top_k=cfg.top_k,
            )
        except Exception as exc:  # best effort: the vector is indexed without suggestions
            self._paused_until = self._clock() + cfg.pause_s
            with self._lock:
                self._ready_dim = None
            log.warning(
                "tag suggestions paused for %.0f s: index search failed: %s", cfg.pause_s, exc
            )
            return []
        tags = emitted_tags(suggestions, cfg.min_score)
        if tags:
            self._metrics.tags_suggested.labels(modality=modality).inc()
        return tags

    def close(self) -> None:
        """Close the index if this step opened it (from a factory); an index passed in
        belongs to whoever passed it, who closes it."""
        if self._factory is not None and self._index is not None:
            self._index.close()
            self._index = None
