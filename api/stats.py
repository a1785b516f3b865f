"""``GET /v1/stats`` and its SSE variant ``GET /v1/stats/stream`` (the dashboard's feed).

One object for a pipeline-health view: messages per second per stage over the last
minute (summed over every worker through Redis), dead letters by stage and reason,
rows per collection, the served model version, freshness, subscriptions, engines,
and which optional endpoints (``trends``) this API serves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

import anyio
from fastapi import APIRouter, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent

from crossfeed.api.deps import AppState, StateDep
from crossfeed.api.health import check_kafka, run_check
from crossfeed.api.live_models import (
    CollectionStats,
    DeadLetterStats,
    EngineStats,
    StageStats,
    StatsResponse,
    SubscriptionStats,
)
from crossfeed.live.activity import STAGES

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["stats"])

OPTIONAL_FEATURES = {"trends": "/v1/trends"}


async def _engines(state: AppState) -> dict[str, EngineStats]:
    async def milvus() -> bool:
        return await anyio.to_thread.run_sync(state.index.ping, abandon_on_cancel=True)

    kafka, mil, red = await asyncio.gather(
        check_kafka(state.settings.kafka.bootstrap),
        run_check("milvus", milvus),
        run_check("redis", state.cache.ping),
    )
    return {
        name: EngineStats(ok=c.ok, detail=c.detail)
        for name, c in (("kafka", kafka), ("milvus", mil), ("redis", red))
    }


def _features(state: AppState) -> list[str]:
    return sorted(name for name, path in OPTIONAL_FEATURES.items() if path in state.route_paths)


async def build_stats(state: AppState) -> StatsResponse:
    live = state.live
    assert live is not None
    activity, freshness, engines, collections = await asyncio.gather(
        live.activity(),
        live.freshness(),
        _engines(state),
        state.collections.get() if state.collections is not None else _no_collections(),
    )
    index_state = await live.index_freshness()
    try:
        stored: int | None = await live.subscriptions.count()
    except Exception as exc:
        log.debug("counting subscriptions failed: %s", exc)
        stored = None
    stages = [
        StageStats(
            stage=s,
            in_per_s=activity.rates.get(s, {}).get("in_per_s", 0.0),
            out_per_s=activity.rates.get(s, {}).get("out_per_s", 0.0),
            series=activity.series.get(s, [0] * activity.window_s),
        )
        for s in STAGES
    ]
    return StatsResponse(
        generated_at=datetime.now(UTC),
        model_version=state.embedder.version,
        window_s=activity.window_s,
        stages=stages,
        deadletters=[DeadLetterStats(**d) for d in activity.deadletters],
        collections=collections,
        freshness=freshness,
        subscriptions=SubscriptionStats(stored=stored, active=index_state.active_subscriptions),
        engines=engines,
        features=_features(state),
    )


async def _no_collections() -> list[CollectionStats]:
    return []


@router.get("/stats", response_model=StatsResponse)
async def stats(state: StateDep) -> StatsResponse:
    """Pipeline health in one object (see the module doc); never fails on an engine outage:
    the engine shows up as not ok instead."""
    return await build_stats(state)


@router.get(
    "/stats/stream",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stats_stream(
    state: StateDep, every_s: Annotated[float, Query(ge=0.5, le=60)] = 2.0
) -> AsyncIterator[ServerSentEvent]:
    """``/v1/stats`` every ``every_s`` seconds as SSE events named ``stats``."""
    while True:
        body = await build_stats(state)
        yield ServerSentEvent(event="stats", data=body.model_dump(mode="json"))
        await anyio.sleep(every_s)
