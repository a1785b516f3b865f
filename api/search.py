"""Search orchestration: cache look-up, query vector, filtered index search, per-post dedupe.

Kept apart from the routes so it can be called (and tested) without HTTP. Every
blocking step (image decoding, embedding, index calls) runs in a worker thread;
embedding additionally goes through a small capacity limiter so a burst of
requests cannot oversubscribe the CPU the encoders already parallelise over.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import numpy as np
from pydantic import ValidationError

from crossfeed.api.cache import SearchCache, cache_key, normalize_text_query
from crossfeed.api.exceptions import ModelVersionConflictError, NotFoundError
from crossfeed.api.metrics import ApiMetrics
from crossfeed.api.models import (
    MomentSpan,
    QueryKind,
    SearchFilters,
    SearchResponse,
    SearchResult,
)
from crossfeed.core.schema import MAX_MEDIA
from crossfeed.encoders.base import Embedder
from crossfeed.encoders.media import decode_image
from crossfeed.encoders.moments import MAX_MOMENTS
from crossfeed.indexer.base import Hit, IndexRow, SearchFilter, VectorIndex

log = logging.getLogger(__name__)

# A post has at most one text row and MAX_MEDIA media rows, each video with its moments.
ROWS_PER_POST = 1 + MAX_MEDIA * (1 + MAX_MOMENTS)
# First try: 3 rows per wanted post covers the usual text+image post; only when the
# dedupe leaves fewer than top_k posts is the search repeated with the worst case.
OVERSAMPLE = 3
MAX_FETCH = 16_384  # Milvus' topk cap


@dataclass(frozen=True)
class Query:
    """A validated search: exactly one of ``text`` (normalised), ``image``, ``post_id``."""

    kind: QueryKind
    top_k: int
    filters: SearchFilters
    text: str | None = None
    image: bytes | None = None
    post_id: str | None = None

    @classmethod
    def for_text(cls, text: str, top_k: int, filters: SearchFilters) -> Query:
        return cls(kind="text", top_k=top_k, filters=filters, text=normalize_text_query(text))

    def identity(self) -> str:
        """The normalised query as it enters the cache key."""
        if self.kind == "text":
            assert self.text is not None
            return self.text
        if self.kind == "image":
            assert self.image is not None
            return hashlib.sha256(self.image).hexdigest()
        assert self.post_id is not None
        return self.post_id


@dataclass
class SearchContext:
    """Everything a search needs; built per request from the app's dependencies."""

    embedder: Embedder
    index: VectorIndex
    cache: SearchCache
    metrics: ApiMetrics
    encode_limiter: anyio.CapacityLimiter
    max_upload_bytes: int
    max_image_pixels: int


def best_per_post(hits: Sequence[Hit], top_k: int) -> list[Hit]:
    """Deduplicate hits per post.

    Rule: a post appears at most once, represented by its highest-scoring item
    (ties: the lower item number, i.e. text before media); posts are ordered by
    that score, best first, and at most ``top_k`` are kept.
    """

    def order(h: Hit) -> tuple[float, str, int, int]:
        moment = -1 if h.row.moment is None else h.row.moment  # the whole video first
        return (-h.score, h.row.post_id, h.row.item, moment)

    ranked = sorted(hits, key=order)
    seen: set[str] = set()
    best: list[Hit] = []
    for hit in ranked:
        if hit.row.post_id in seen:
            continue
        seen.add(hit.row.post_id)
        best.append(hit)
        if len(best) == top_k:
            break
    return best


def collect_hits(
    index: VectorIndex, vector: Sequence[float], top_k: int, flt: SearchFilter
) -> list[Hit]:
    """``top_k`` distinct posts, oversampling rows since one post may hold several."""
    fetch = min(top_k * OVERSAMPLE, MAX_FETCH)
    hits = index.search(vector, fetch, flt)
    best = best_per_post(hits, top_k)
    worst_case = min(top_k * ROWS_PER_POST, MAX_FETCH)
    if len(best) < top_k and len(hits) == fetch and fetch < worst_case:
        hits = index.search(vector, worst_case, flt)
        best = best_per_post(hits, top_k)
    return best


def query_row_for_post(
    rows: Sequence[IndexRow], post_id: str, model_version: str, *, prefer_media: bool = False
) -> IndexRow:
    """The stored row whose vector stands for a post: its text, else its first media item
    (its first media item, else its text, with ``prefer_media``).

    Only rows from the serving model version qualify: another version's vectors
    live in another space and would rank noise.
    """
    if not rows:
        raise NotFoundError(f"post {post_id!r} is not in the index")
    usable = [
        r
        for r in rows
        if r.model_version == model_version and len(r.vector) > 0 and r.moment is None
    ]
    if not usable:
        versions = sorted({r.model_version for r in rows})
        raise ModelVersionConflictError(
            f"post {post_id!r} was indexed with model version(s) {versions}; "
            f"the API serves {model_version!r}"
        )
    preferred = [r for r in usable if (r.modality != "text") == prefer_media]
    return min(preferred or usable, key=lambda r: r.item)


def moment_span(row: IndexRow) -> MomentSpan | None:
    if row.moment is None or row.start_ms is None or row.end_ms is None:
        return None
    return MomentSpan(index=row.moment, start_s=row.start_ms / 1000, end_s=row.end_ms / 1000)


def _to_result(hit: Hit) -> SearchResult:
    row = hit.row
    return SearchResult(
        id=row.post_id,
        score=round(float(hit.score), 6),
        modality=row.modality,
        item=row.item,
        text=row.text,
        tags=list(row.tags),
        suggested_tags=list(row.suggested_tags),
        media_ref=row.media_ref or None,
        moment=moment_span(row),
        created_at=datetime.fromtimestamp(row.created_at_ms / 1000, tz=UTC),
    )


def _first_vector(array: np.ndarray) -> list[float]:
    return [float(x) for x in np.asarray(array, dtype=np.float32)[0]]


async def _query_vector(ctx: SearchContext, query: Query) -> list[float]:
    embedder = ctx.embedder
    if query.kind == "text":
        assert query.text is not None
        text = query.text
        out = await anyio.to_thread.run_sync(
            lambda: embedder.embed_texts([text]), limiter=ctx.encode_limiter
        )
        return _first_vector(out)
    if query.kind == "image":
        assert query.image is not None
        data = query.image

        def decode_and_embed() -> np.ndarray:
            image = decode_image(data, ctx.max_upload_bytes, ctx.max_image_pixels)
            return embedder.embed_images([image])

        out = await anyio.to_thread.run_sync(decode_and_embed, limiter=ctx.encode_limiter)
        return _first_vector(out)
    assert query.post_id is not None
    rows = await anyio.to_thread.run_sync(ctx.index.get_post, query.post_id)
    return list(query_row_for_post(rows, query.post_id, embedder.version).vector)


async def run_search(ctx: SearchContext, query: Query) -> SearchResponse:
    """Answer ``query`` from the cache when possible, else search and fill the cache."""
    started = time.perf_counter()
    version = ctx.embedder.version
    epoch = await ctx.cache.epoch()
    key: str | None = None
    if epoch is not None:
        key = cache_key(
            ctx.cache.prefix,
            kind=query.kind,
            query=query.identity(),
            filters=query.filters.canonical(),
            top_k=query.top_k,
            epoch=epoch,
            model_version=version,
        )
        cached = await ctx.cache.get(key)
        if cached is not None:
            response = _from_cache(cached, started)
            if response is not None:
                ctx.metrics.cache_hits.inc()
                ctx.metrics.search_seconds.labels(cached="true").observe(
                    time.perf_counter() - started
                )
                return response
    ctx.metrics.cache_misses.inc()

    vector = await _query_vector(ctx, query)
    exclude = (query.post_id,) if query.post_id is not None else ()
    flt = query.filters.to_index_filter(model_version=version, exclude_post_ids=exclude)
    hits = await anyio.to_thread.run_sync(collect_hits, ctx.index, vector, query.top_k, flt)
    response = SearchResponse(
        results=[_to_result(h) for h in hits],
        cached=False,
        epoch=epoch,
        model_version=version,
        query=query.kind,
        top_k=query.top_k,
        took_ms=0.0,
    )
    if key is not None:
        await ctx.cache.set(key, response.model_dump(mode="json", exclude={"cached", "took_ms"}))
    elapsed = time.perf_counter() - started
    ctx.metrics.search_seconds.labels(cached="false").observe(elapsed)
    response.took_ms = round(elapsed * 1000, 3)
    return response


def _from_cache(payload: dict[str, Any], started: float) -> SearchResponse | None:
    try:
        response = SearchResponse.model_validate({**payload, "cached": True, "took_ms": 0.0})
    except ValidationError:
        log.warning("ignoring a cache entry of an unexpected shape")
        return None
    response.took_ms = round((time.perf_counter() - started) * 1000, 3)
    return response
