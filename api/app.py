"""The FastAPI application factory.

``create_app(settings)`` builds what is not injected (the shared-space embedder,
the Milvus index, the Redis cache, a metrics bundle) inside the lifespan, so
importing this module or creating the app touches no engine; tests inject fakes.
Objects the factory built are closed on shutdown; injected ones belong to the caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from PIL import Image

from crossfeed import __version__
from crossfeed.api import (
    dashboard,
    erasure,
    health,
    media,
    routes,
    stats,
    subscriptions,
    suggest,
)
from crossfeed.api import trends as trends_api
from crossfeed.api.auth import Access, RateLimits, auth_enabled
from crossfeed.api.cache import RedisSearchCache, SearchCache
from crossfeed.api.cursor import CursorCodec
from crossfeed.api.deps import AppState, authorize
from crossfeed.api.errors import install_error_handlers
from crossfeed.api.keys import KeyStore, RedisKeyStore
from crossfeed.api.live import CollectionLister, CollectionsCache, LiveServices
from crossfeed.api.live_models import SubscriptionCreate
from crossfeed.api.metrics import ApiMetrics
from crossfeed.api.models import SearchFilters, SearchRequest
from crossfeed.api.suggest import SuggestTagsRequest
from crossfeed.api.tombstones import KafkaTombstones, Tombstones
from crossfeed.api.trend_service import TrendService, open_tracker
from crossfeed.core.settings import Settings
from crossfeed.encoders.base import Embedder
from crossfeed.exceptions import ConfigError, CrossfeedError
from crossfeed.indexer.base import IndexRow, VectorIndex
from crossfeed.indexer.erasure import Eraser, default_eraser
from crossfeed.trends.base import TrendTracker

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


def _elsewhere(
    settings: Settings, owned: VectorIndex | None
) -> Callable[[str], list[IndexRow]] | None:
    if owned is None:
        return None
    from crossfeed.indexer.collections import find_post_elsewhere

    milvus = settings.milvus
    return lambda post_id: find_post_elsewhere(milvus, post_id)


async def _warm_index(state: AppState) -> None:
    """Make the index ready now if the engine answers; otherwise on first use."""
    try:
        await anyio.to_thread.run_sync(state.index.ensure_ready, state.embedder.dim)
        state.index_ready = True
    except CrossfeedError as exc:
        if not exc.retriable:
            raise
        log.warning("index not reachable at startup, will retry on first request: %s", exc)


def _cursor_codec(settings: Settings) -> CursorCodec:
    secret = settings.api.cursor_secret
    if secret is None or not secret.get_secret_value():
        log.info(
            "search cursors are signed with a key of this process (set CROSSFEED_CURSOR_SECRET "
            "when several API processes serve one address)"
        )
        return CursorCodec.random()
    try:
        return CursorCodec(secret.get_secret_value().encode("utf-8"))
    except ValueError as exc:
        raise ConfigError(f"CROSSFEED_CURSOR_SECRET: {exc}") from exc


def create_app(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    index: VectorIndex | None = None,
    cache: SearchCache | None = None,
    metrics: ApiMetrics | None = None,
    keys: KeyStore | None = None,
    rate_limits: RateLimits | None = None,
    live: LiveServices | None = None,
    eraser: Eraser | None = None,
    tombstones: Tombstones | None = None,
    trends: TrendTracker | None = None,
    elsewhere: Callable[[str], list[IndexRow]] | None = None,
) -> FastAPI:
    """The crossfeed query API; pass any of the collaborators to replace the real ones.

    With auth on (see :mod:`crossfeed.api.auth`), ``keys`` defaults to the Redis key store
    and ``rate_limits`` to Redis-backed limits of ``CROSSFEED_RATE_LIMIT``. ``live``:
    subscriptions, thumbnails, freshness and activity (default: on Redis). ``eraser`` and
    ``tombstones`` serve ``DELETE /v1/posts/{id}`` (default: the configured engines).
    ``trends``: the tracker behind ``GET /v1/trends`` and ``filters.trend`` (default: the
    deployment's, opened on first use; with ``CROSSFEED_TRENDS=0`` and none given, the
    trends routes are not served).
    ``elsewhere``: a post's rows in other model versions' collections (default: Milvus,
    when the app built its own index).
    """
    access = _access(settings, keys, rate_limits)
    serve_trends = trends is not None or settings.trends.enabled
    codec = _cursor_codec(settings)  # a bad secret stops here, before anything starts

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned_index: VectorIndex | None = None
        owned_cache: SearchCache | None = None
        owned_live: LiveServices | None = None
        state: AppState | None = None
        trend_service: TrendService | None = None
        if serve_trends:
            trend_service = TrendService(
                trends if trends is not None else lambda: open_tracker(settings)
            )
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
            erasing = eraser or default_eraser(settings)
            stones = tombstones or KafkaTombstones(settings.kafka)
            state = AppState(
                eraser=erasing,
                tombstones=stones,
                access=access,
                settings=settings,
                embedder=emb,
                index=idx,
                cache=store,
                metrics=metrics or ApiMetrics(),
                cursors=codec,
                live=services,
                collections=CollectionsCache(_collection_lister(settings, idx, owned_index)),
                route_paths=_served_paths(app),
                trends=trend_service,
                elsewhere=elsewhere or _elsewhere(settings, owned_index),
            )
            app.state.crossfeed = state
            await _warm_index(state)
            yield
        finally:
            if trend_service is not None:
                await anyio.to_thread.run_sync(trend_service.close)
            if eraser is None and state is not None and state.eraser is not None:
                await state.eraser.ledger.close()
            if tombstones is None and state is not None and state.tombstones is not None:
                await state.tombstones.close()
            if owned_live is not None:
                await owned_live.close()
            if owned_cache is not None:
                await owned_cache.close()
            if owned_index is not None:
                await anyio.to_thread.run_sync(owned_index.close)
            if keys is None and access.keys is not None:
                await access.keys.close()

    app = FastAPI(
        title="crossfeed",
        version=__version__,
        description="Cross-media retrieval over a streaming social-media index.",
        lifespan=lifespan,
        dependencies=[Depends(authorize)],
    )
    install_error_handlers(app)
    app.include_router(media.router)  # before routes: /posts/{id:path} would swallow it
    app.include_router(routes.router)
    app.include_router(erasure.router)
    app.include_router(suggest.router)
    app.include_router(subscriptions.router)
    app.include_router(stats.router)
    if serve_trends:
        app.include_router(trends_api.router)
    app.include_router(health.router)
    app.include_router(dashboard.router)
    app.mount("/static", dashboard.static_files(), name="static")
    app.add_middleware(_CountRequests)
    app.openapi = lambda: _openapi(app, settings.api.max_top_k)  # type: ignore[method-assign]
    return app


def _served_paths(app: FastAPI) -> frozenset[str]:
    """The paths of the app's own routes, plus each optional feature's path when a GET of it
    would be routed (routers included with ``include_router`` are matched, not listed:
    this FastAPI keeps them as one wrapper route each, without a ``path``)."""
    from starlette.routing import Match

    from crossfeed.api.stats import OPTIONAL_FEATURES

    paths = {str(getattr(r, "path", "")) for r in app.routes}
    for path in OPTIONAL_FEATURES.values():
        scope = {
            "type": "http",
            "method": "GET",
            "path": path,
            "root_path": "",
            "query_string": b"",
            "headers": [],
        }
        if any(r.matches(scope)[0] == Match.FULL for r in app.routes):
            paths.add(path)
    return frozenset(paths)


def _access(settings: Settings, keys: KeyStore | None, rate_limits: RateLimits | None) -> Access:
    enabled = auth_enabled(settings.api)
    if enabled and keys is None:
        keys = RedisKeyStore(settings.redis.url.get_secret_value(), settings.redis.key_prefix)
    if enabled and rate_limits is None:
        rate_limits = RateLimits.for_redis(
            settings.api.rate_limit,
            settings.redis.url.get_secret_value(),
            settings.redis.key_prefix,
        )
    if enabled:
        log.info("API keys required (rate limit %s per key)", settings.api.rate_limit)
    return Access(enabled, keys, rate_limits, metrics_public=settings.api.metrics_public)


class _CountRequests:
    """Counts requests per route template (never the raw path: unbounded label values).

    Plain ASGI, not ``app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` runs the
    route in a task of its own and copies the response through a stream, which cost a
    cached search more than the search itself. Counted when the response starts (an
    event stream is counted when it opens, not hours later when it closes)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        counted = False

        def count(status: int) -> None:
            nonlocal counted
            counted = True
            state: AppState | None = getattr(scope["app"].state, "crossfeed", None)
            if state is None:
                return
            label = getattr(scope.get("route"), "path", None) or "unmatched"
            state.metrics.requests.labels(route=label, status=str(status)).inc()
            if log.isEnabledFor(logging.DEBUG):
                took = (time.perf_counter() - started) * 1000
                log.debug("%s %s -> %d in %.1f ms", scope["method"], label, status, took)

        async def counting_send(message: Any) -> None:
            if message["type"] == "http.response.start" and not counted:
                count(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            if not counted:
                count(500)


def _document_top_k_limit(schema: dict[str, Any], max_top_k: int) -> None:
    """``top_k`` of a search is capped by ``CROSSFEED_MAX_TOP_K``: say so in the schema."""
    search = schema["components"]["schemas"]["SearchRequest"]["properties"]["top_k"]
    search["maximum"] = max_top_k
    body = schema["paths"]["/v1/search"]["post"]["requestBody"]["content"]
    body["multipart/form-data"]["schema"]["properties"]["top_k"]["maximum"] = max_top_k


def _openapi(app: FastAPI, max_top_k: int) -> dict[str, Any]:
    """The generated schema, plus the JSON search body (read by hand in the route)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (SearchRequest, SearchFilters, SuggestTagsRequest, SubscriptionCreate):
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in body.pop("$defs", {}).items():
                components.setdefault(name, sub)
            components[model.__name__] = body
        _document_top_k_limit(schema, max_top_k)
        app.openapi_schema = schema
    return app.openapi_schema
