"""Search orchestration: cache look-up, query vector, filtered index search, per-post dedupe,
pages (see :mod:`crossfeed.api.cursor`).

Kept apart from the routes so it can be called (and tested) without HTTP. Every
blocking step (image decoding, embedding, index calls) runs in a worker thread;
embedding additionally goes through a small capacity limiter so a burst of
requests cannot oversubscribe the CPU the encoders already parallelise over.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import anyio
import numpy as np
from pydantic import ValidationError

from crossfeed.api.cache import SearchCache, cache_key, normalize_text_query
from crossfeed.api.cursor import CursorCodec, Page, query_fingerprint
from crossfeed.api.exceptions import BadRequestError
from crossfeed.api.metrics import ApiMetrics
from crossfeed.api.models import (
    MomentSpan,
    QueryKind,
    SearchFilters,
    SearchResponse,
    SearchResult,
)
from crossfeed.api.retry import engine_call
from crossfeed.encoders.base import Embedder
from crossfeed.encoders.media import DEFAULT_MAX_MEDIA_FRAMES, decode_image
from crossfeed.indexer.base import Hit, IndexRow, VectorIndex
from crossfeed.live.thumbs import ThumbnailReader
from crossfeed.retrieval.hits import collect_hits, query_row_for_post

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Query:
    """A validated search: exactly one of ``text`` (normalised), ``image``, ``post_id``."""

    kind: QueryKind
    top_k: int
    filters: SearchFilters
    text: str | None = None
    image: bytes | None = None
    post_id: str | None = None
    cursor: str | None = None  # the previous page's next_cursor
    # filters.trend resolved to the trend's post ids (by the route); None = no trend filter
    post_ids: tuple[str, ...] | None = None

    @classmethod
    def for_text(
        cls, text: str, top_k: int, filters: SearchFilters, cursor: str | None = None
    ) -> Query:
        return cls(
            kind="text",
            top_k=top_k,
            filters=filters,
            text=normalize_text_query(text),
            cursor=cursor,
        )

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
    cursors: CursorCodec
    max_depth: int = 1000  # posts a query can be paged to
    retry_budget_s: float = 0.0
    max_media_frames: int = DEFAULT_MAX_MEDIA_FRAMES
    thumbnails: ThumbnailReader | None = None
    # A repost's original (it has no vectors of its own): a post-id query of a repost
    # searches with the original's vector.
    original_of: Callable[[str], Awaitable[str | None]] | None = None


def thumbnail_url(post_id: str, item: int, moment: int | None) -> str:
    """Where the API serves a media item's thumbnail (post ids are path-quoted)."""
    url = f"/v1/posts/{quote(post_id, safe='')}/media/{item}"
    return url if moment is None else f"{url}?moment={moment}"


async def attach_thumbnails(reader: ThumbnailReader, results: list[SearchResult]) -> None:
    """Set ``thumbnail`` on results whose media has one stored: the matching item (and
    moment), or for a text hit the post's first media item."""
    wanted = []
    for r in results:
        item = r.item if r.item > 0 else 1
        moment = r.moment.index if (r.moment is not None and r.item > 0) else None
        wanted.append((r.id, item, moment))
    found = await reader.existing(list(dict.fromkeys(wanted)))
    for r, key in zip(results, wanted, strict=True):
        if key in found:
            r.thumbnail = thumbnail_url(*key)


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
        author=row.author,
        source=row.source or None,
    )


def _first_vector(array: np.ndarray) -> list[float]:
    return [float(x) for x in np.asarray(array, dtype=np.float32)[0]]


async def query_vector(ctx: SearchContext, query: Query) -> list[float]:
    """The unit query vector of ``query`` (embedded, or a stored post's), off the loop."""
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
            image = decode_image(
                data,
                ctx.max_upload_bytes,
                ctx.max_image_pixels,
                max_total_frames=ctx.max_media_frames,
            )
            return embedder.embed_images([image])

        out = await anyio.to_thread.run_sync(decode_and_embed, limiter=ctx.encode_limiter)
        return _first_vector(out)
    assert query.post_id is not None
    rows = await engine_call(ctx.retry_budget_s, ctx.index.get_post, query.post_id)
    if not rows and ctx.original_of is not None:
        original = await ctx.original_of(query.post_id)
        if original is not None:
            rows = await engine_call(ctx.retry_budget_s, ctx.index.get_post, original)
    return list(query_row_for_post(rows, query.post_id, embedder.version).vector)


async def run_search(ctx: SearchContext, query: Query) -> SearchResponse:
    """Answer ``query`` (one page of it) from the cache when possible, else search and fill
    the cache. A bad or foreign cursor raises InvalidCursorError, an old one StaleCursorError.
    """
    started = time.perf_counter()
    version = ctx.embedder.version
    state = await ctx.cache.epoch_state()
    epoch, fence = state if state is not None else (None, None)
    # Redis away: no cache read or write (an entry from before the outage may miss posts
    # indexed during it), no thumbnails, and the answer says so.
    degraded = ["cache"] if ctx.cache.degraded else []
    ctx.metrics.degraded.labels(what="cache").set(1.0 if degraded else 0.0)
    # An image is hashed off the event loop: an upload may be up to 10 MiB.
    identity = (
        await anyio.to_thread.run_sync(query.identity)
        if query.kind == "image"
        else query.identity()
    )
    canonical = query.filters.canonical()
    if query.post_ids is not None:
        # A trend's members change while the epoch does not always: key on the members too.
        members = "\n".join(sorted(query.post_ids)).encode("utf-8", "surrogatepass")
        canonical["trend_posts"] = hashlib.sha256(members).hexdigest()
    fingerprint = query_fingerprint(
        kind=query.kind, identity=identity, filters=canonical, model_version=version
    )
    page = (
        ctx.cursors.decode(query.cursor, fingerprint=fingerprint, epoch=epoch)
        if query.cursor is not None
        else None
    )
    offset = page.offset if page is not None else 0
    if offset >= ctx.max_depth:
        raise BadRequestError(f"paging stops after {ctx.max_depth} results")
    key: str | None = None
    if epoch is not None:
        key = cache_key(
            ctx.cache.prefix,
            kind=query.kind,
            query=identity,
            filters=canonical,
            top_k=query.top_k,
            epoch=epoch,
            model_version=version,
            page=None if page is None else [page.offset, page.last_score, page.last_post_id],
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

    vector = await query_vector(ctx, query)
    exclude = (query.post_id,) if query.post_id is not None else ()
    flt = query.filters.to_index_filter(
        model_version=version, exclude_post_ids=exclude, post_ids=query.post_ids
    )
    # Every post up to the end of this page, plus one to tell whether another page exists.
    # The fence makes the index show every row the epoch announced: a result cached
    # under this epoch can never miss a post the index stage had already accepted.
    depth = min(offset + query.top_k, ctx.max_depth)
    hits = (
        []
        if query.post_ids == ()  # a trend whose posts all aged out: nothing to rank
        else await engine_call(
            ctx.retry_budget_s,
            lambda: collect_hits(ctx.index, vector, depth + 1, flt, fence=fence),
        )
    )
    if page is not None:
        hits = [h for h in hits if page.after(h.score, h.row.post_id)]
    shown = hits[: max(0, depth - offset)]
    next_cursor = None
    if len(hits) > len(shown) and shown and offset + len(shown) < ctx.max_depth:
        last = shown[-1]
        next_cursor = ctx.cursors.encode(
            Page(
                offset=offset + len(shown),
                epoch=epoch,
                last_score=float(last.score),
                last_post_id=last.row.post_id,
            ),
            fingerprint,
        )
    results = [_to_result(h) for h in shown]
    if ctx.thumbnails is not None and not degraded:
        await attach_thumbnails(ctx.thumbnails, results)
    response = SearchResponse(
        results=results,
        cached=False,
        epoch=epoch,
        model_version=version,
        query=query.kind,
        top_k=query.top_k,
        took_ms=0.0,
        next_cursor=next_cursor,
        degraded=degraded,
    )
    if key is not None and not degraded:
        payload = response.model_dump(
            mode="json", exclude={"cached", "took_ms", "freshness", "degraded"}
        )
        await ctx.cache.set(key, payload)
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
