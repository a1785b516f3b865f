"""The FastAPI application factory.

``create_app(settings)`` builds what is not injected (the shared-space embedder,
the Milvus index, the Redis cache, a metrics bundle) inside the lifespan, so
importing this module or creating the app touches no engine; tests inject fakes.
Objects the factory built are closed on shutdown; injected ones belong to the caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from PIL import Image

from crossfeed import __version__
from crossfeed.api import dashboard, health, media, routes, stats, subscriptions, suggest
from crossfeed.api.cache import RedisSearchCache, SearchCache
from crossfeed.api.deps import AppState
from crossfeed.api.errors import install_error_handlers
from crossfeed.api.live import CollectionLister, CollectionsCache, LiveServices
from crossfeed.api.metrics import ApiMetrics
from crossfeed.api.models import SearchFilters, SearchRequest
from crossfeed.core.settings import Settings
from crossfeed.encoders.base import Embedder
from crossfeed.exceptions import CrossfeedError
from crossfeed.indexer.base import VectorIndex

log = logging.getLogger(__name__)


def _build_embedder(settings: Settings) -> Embedder:
    from crossfeed.encoders.model import load_embedder

    embedder = load_embedder(settings)
    # Load both towers and the heads now, not on the first request: a broken model
    # configuration stops startup with a clear error, and latency stays flat.
    embedder.embed_texts(["warm-up"])
    embedder.embed_images([Image.new("RGB", (32, 32), (128, 128, 128))])
    log.info("embedder ready: model version %s, %d dimensions", embedder.version, embedder.dim)
    return embedder


def _build_index(settings: Settings) -> VectorIndex:
    from crossfeed.indexer.milvus import MilvusIndex

    return MilvusIndex(settings.milvus)


def _collection_lister(
    settings: Settings, index: VectorIndex, owned: VectorIndex | None
) -> CollectionLister:
    """Rows per collection: every collection of this deployment when the app talks to
    Milvus itself; the injected index's own count otherwise (tests, embedded use)."""
    if owned is not None:

        def milvus() -> list[tuple[str, int | None, bool]]:
            from crossfeed.indexer.collections import list_collections

            # Milvus' row statistics lag recent upserts; the served one gets an exact count.
            return [
                (c.name, index.count() if c.serving else c.rows, c.serving)
                for c in list_collections(settings.milvus)
            ]

        return milvus
    return lambda: [(settings.milvus.collection, index.count(), True)]


async def _warm_index(state: AppState) -> None:
    """Make the index ready now if the engine answers; otherwise on first use."""
    try:
        await anyio.to_thread.run_sync(state.index.ensure_ready, state.embedder.dim)
        state.index_ready = True
    except CrossfeedError as exc:
        if not exc.retriable:
            raise
        log.warning("index not reachable at startup, will retry on first request: %s", exc)


def create_app(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    index: VectorIndex | None = None,
    cache: SearchCache | None = None,
    metrics: ApiMetrics | None = None,
    live: LiveServices | None = None,
) -> FastAPI:
    """The crossfeed query API; pass any of the collaborators to replace the real ones.

    ``live``: subscriptions, thumbnails, freshness and activity (default: on Redis).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned_index: VectorIndex | None = None
        owned_cache: SearchCache | None = None
        owned_live: LiveServices | None = None
        try:
            emb: Embedder = (
                embedder
                if embedder is not None
                else await anyio.to_thread.run_sync(_build_embedder, settings)
            )
            idx = index or _build_index(settings)
            owned_index = None if index is not None else idx
            store = cache or RedisSearchCache.from_settings(settings.redis)
            owned_cache = None if cache is not None else store
            services = live or LiveServices.from_settings(settings)
            owned_live = None if live is not None else services
            state = AppState(
                settings=settings,
                embedder=emb,
                index=idx,
                cache=store,
                metrics=metrics or ApiMetrics(),
                live=services,
                collections=CollectionsCache(_collection_lister(settings, idx, owned_index)),
                route_paths=frozenset(getattr(r, "path", "") for r in app.routes),
            )
            app.state.crossfeed = state
            await _warm_index(state)
            yield
        finally:
            if owned_live is not None:
                await owned_live.close()
            if owned_cache is not None:
                await owned_cache.close()
            if owned_index is not None:
                await anyio.to_thread.run_sync(owned_index.close)

    app = FastAPI(
        title="crossfeed",
        version=__version__,
        description="Cross-media retrieval over a streaming social-media index.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(media.router)  # before routes: /posts/{id:path} would swallow it
    app.include_router(routes.router)
    app.include_router(suggest.router)
    app.include_router(subscriptions.router)
    app.include_router(stats.router)
    app.include_router(health.router)
    app.include_router(dashboard.router)
    app.mount("/static", dashboard.static_files(), name="static")
    app.middleware("http")(_count_requests)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


async def _count_requests(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Count requests per route template (never the raw path: unbounded label values)."""
    started = time.perf_counter()
    status = 500
    try:
        response = await call_next(request)
        status = response.status_code
        return response
    finally:
        state: AppState | None = getattr(request.app.state, "crossfeed", None)
        if state is not None:
            route = request.scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            state.metrics.requests.labels(route=label, status=str(status)).inc()
            log.debug(
                "%s %s -> %d in %.1f ms",
                request.method,
                label,
                status,
                (time.perf_counter() - started) * 1000,
            )


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated schema, plus the JSON search body (read by hand in the route)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (SearchRequest, SearchFilters):
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in body.pop("$defs", {}).items():
                components.setdefault(name, sub)
            components[model.__name__] = body
        app.openapi_schema = schema
    return app.openapi_schema
