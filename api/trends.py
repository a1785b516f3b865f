"""``GET /v1/trends``, ``GET /v1/trends/{id}`` and the members behind ``filters.trend``.

The trends come from the deployment's :class:`~crossfeed.trends.base.TrendTracker` (state
in Redis, shared with the workers that feed it: see :mod:`crossfeed.streams.trends`),
through :class:`~crossfeed.api.trend_service.TrendService`.

Trend-scoped search (``filters.trend`` in ``POST /v1/search``): the trend's recent post
ids (at most :data:`~crossfeed.api.trend_service.MAX_TREND_POSTS`) become a post-id
filter of the index search, so only the trend's posts come back, ranked by the query.
Unknown trend: 404.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from crossfeed.api.deps import LiveDep, SettingsDep, StateDep
from crossfeed.api.exceptions import NotFoundError
from crossfeed.api.models import ERRORS, MAX_TREND_ID_CHARS, TREND_ID_PATTERN
from crossfeed.api.trend_models import (
    MAX_TREND_LIMIT,
    TrendKindFilter,
    TrendResponse,
    TrendsResponse,
    trend_from_view,
)
from crossfeed.api.trend_service import TrendService

router = APIRouter(prefix="/v1", tags=["trends"])

MAX_SERIES_WINDOWS = 10_000


async def get_trends(state: StateDep) -> TrendService:
    service = state.trends
    if service is None:  # the router is mounted only with a service; never in production
        raise NotFoundError("trends are off in this deployment (CROSSFEED_TRENDS=0)")
    return service


TrendsDep = Annotated[TrendService, Depends(get_trends)]
WindowParam = Annotated[
    int | None,
    Query(
        ge=1,
        le=MAX_SERIES_WINDOWS,
        description="how many recent windows each trend's series covers (default: all kept)",
    ),
]


@router.get("/trends", response_model=TrendsResponse, responses=ERRORS)
async def list_trends(
    trends: TrendsDep,
    live: LiveDep,
    settings: SettingsDep,
    kind: Annotated[TrendKindFilter, Query(description="hashtag, cluster or all")] = "all",
    limit: Annotated[int, Query(ge=1, le=MAX_TREND_LIMIT)] = 20,
    window: WindowParam = None,
) -> TrendsResponse:
    """What is bursting now, highest burst score first: hashtags and clusters of the shared
    space, each with its current and baseline rate (distinct authors per window), a series
    for a sparkline, when it was first flagged, and a few sample posts."""
    started = time.perf_counter()
    views = await trends.current(kind, limit)
    window_s = views[0].window_s if views else settings.trends.window_s
    return TrendsResponse(
        trends=[trend_from_view(v, windows=window) for v in views],
        kind=kind,
        window_s=window_s,
        took_ms=round((time.perf_counter() - started) * 1000, 3),
        freshness=await live.freshness(),
    )


@router.get("/trends/{trend_id}", response_model=TrendResponse, responses=ERRORS)
async def get_trend(
    trends: TrendsDep,
    live: LiveDep,
    trend_id: str = Path(min_length=3, max_length=MAX_TREND_ID_CHARS, pattern=TREND_ID_PATTERN),
    window: WindowParam = None,
) -> TrendResponse:
    """One trend (current or recently flagged); 404 when no trend has this id. Search
    inside it with ``filters.trend`` in ``POST /v1/search``."""
    view = await trends.get(trend_id)
    trend = trend_from_view(view, windows=window)
    return TrendResponse(**trend.model_dump(), freshness=await live.freshness())
