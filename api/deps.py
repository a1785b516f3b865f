"""FastAPI dependencies as ``Annotated`` aliases.

The app's long-lived objects live in one :class:`AppState` on ``app.state``; the
aliases hand them to routes, so routes never reach into globals and tests swap
any of them through :func:`crossfeed.api.app.create_app`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

import anyio
from fastapi import Depends, Request

from crossfeed.api.auth import Access
from crossfeed.api.cache import SearchCache
from crossfeed.api.cursor import CursorCodec
from crossfeed.api.keys import ApiKey
from crossfeed.api.live import CollectionsCache, LiveServices
from crossfeed.api.metrics import ApiMetrics
from crossfeed.api.search import SearchContext
from crossfeed.api.tombstones import Tombstones
from crossfeed.core.settings import Settings
from crossfeed.encoders.base import Embedder
from crossfeed.indexer.base import IndexRow, VectorIndex
from crossfeed.indexer.erasure import Eraser
from crossfeed.live.thumbs import ThumbnailReader

if TYPE_CHECKING:
    from crossfeed.api.trend_service import TrendService


@dataclass
class AppState:
    access: Access
    settings: Settings
    embedder: Embedder
    index: VectorIndex
    cache: SearchCache
    metrics: ApiMetrics
    # Concurrent encoder calls; the encoders use several threads each already.
    encode_limiter: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(2))
    index_ready: bool = False
    index_lock: anyio.Lock = field(default_factory=anyio.Lock)
    row_count_at: float = 0.0  # when /metrics last refreshed the row-count gauge
    # Signs search cursors (CROSSFEED_CURSOR_SECRET, else a random key of this process).
    cursors: CursorCodec = field(default_factory=CursorCodec.random)
    live: LiveServices | None = None  # subscriptions, thumbnails, freshness (set by lifespan)
    collections: CollectionsCache | None = None  # rows per collection for /v1/stats
    route_paths: frozenset[str] = frozenset()  # what this app serves (optional features)
    eraser: Eraser | None = None  # DELETE /v1/posts/{id}
    tombstones: Tombstones | None = None
    trends: TrendService | None = None  # GET /v1/trends, filters.trend (None: trends off)
    # A post's rows in another model version's collection (blocking), for GET /v1/posts
    # of a post (or a repost's original) the served collection does not hold.
    elsewhere: Callable[[str], list[IndexRow]] | None = None


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.crossfeed
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def authorize(request: Request) -> ApiKey | None:
    """Every route's gate: 401/403/429 per the app's :class:`Access` (a no-op when auth is
    off). Runs before the route's own dependencies."""
    state: AppState | None = getattr(request.app.state, "crossfeed", None)
    if state is None:  # lifespan not run (never in production)
        return None
    return await state.access.check(request)


CallerDep = Annotated[ApiKey | None, Depends(authorize)]


async def get_settings(state: StateDep) -> Settings:
    return state.settings


async def get_embedder(state: StateDep) -> Embedder:
    return state.embedder


async def get_cache(state: StateDep) -> SearchCache:
    return state.cache


async def get_metrics(state: StateDep) -> ApiMetrics:
    return state.metrics


async def get_index(state: StateDep) -> VectorIndex:
    """The index, made ready (collection created/checked, loaded) on first use.

    Done lazily rather than only at startup so the API comes up while Milvus is
    still starting, reports it in /readyz, and serves as soon as it answers.
    """
    if not state.index_ready:
        async with state.index_lock:
            if not state.index_ready:
                await anyio.to_thread.run_sync(state.index.ensure_ready, state.embedder.dim)
                state.index_ready = True
    return state.index


async def get_live(state: StateDep) -> LiveServices:
    live = state.live
    assert live is not None, "the app's lifespan sets up live services"
    return live


SettingsDep = Annotated[Settings, Depends(get_settings)]
EncoderDep = Annotated[Embedder, Depends(get_embedder)]
CacheDep = Annotated[SearchCache, Depends(get_cache)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
IndexDep = Annotated[VectorIndex, Depends(get_index)]
LiveDep = Annotated[LiveServices, Depends(get_live)]


def search_context(
    state: AppState,
    embedder: Embedder,
    index: VectorIndex,
    *,
    thumbnails: ThumbnailReader | None = None,
) -> SearchContext:
    """What one search needs, from the app's state and settings (routes pass the
    dependencies they resolved, so a ready index is used)."""
    api = state.settings.api
    return SearchContext(
        embedder=embedder,
        index=index,
        cache=state.cache,
        metrics=state.metrics,
        encode_limiter=state.encode_limiter,
        max_upload_bytes=api.max_upload_bytes,
        max_image_pixels=state.settings.encoder.max_image_pixels,
        max_media_frames=state.settings.encoder.max_media_frames,
        cursors=state.cursors,
        max_depth=api.max_search_depth,
        retry_budget_s=api.retry_budget_s,
        thumbnails=thumbnails,
        original_of=state.live.original_of if state.live is not None else None,
    )
