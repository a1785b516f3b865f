"""``/healthz`` (the process answers), ``/readyz`` (its engines answer), ``/metrics``.

Readiness probes each engine concurrently with a short deadline: the Kafka-protocol
broker by TCP connect to a bootstrap address (the API does not consume, it only
needs the broker up for the pipeline to be live), Milvus by a server-version RPC,
Redis by PING. Any failure answers 503 naming the engine(s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import anyio
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from crossfeed.api.deps import AppState, StateDep
from crossfeed.api.models import CheckResult, ReadyResponse
from crossfeed.core.kafka import parse_bootstrap
from crossfeed.exceptions import ConfigError

log = logging.getLogger(__name__)

router = APIRouter()

CHECK_TIMEOUT_S = 2.0
# /metrics refreshes the row-count gauge at most this often (it costs a Milvus query).
ROW_COUNT_REFRESH_S = 15.0


async def check_kafka(bootstrap: str, timeout_s: float = CHECK_TIMEOUT_S) -> CheckResult:
    """Ready when any bootstrap broker accepts a TCP connection within the deadline."""
    try:
        brokers = parse_bootstrap(bootstrap)
    except ConfigError as exc:
        return CheckResult(ok=False, detail=str(exc))
    errors: list[str] = []
    for host, port in ((b.host, b.port) for b in brokers):
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
        except (OSError, TimeoutError) as exc:
            errors.append(f"{host}:{port}: {exc.__class__.__name__} {exc}".strip())
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return CheckResult(ok=True)
    return CheckResult(ok=False, detail="; ".join(errors))


async def run_check(name: str, check: Callable[[], Awaitable[bool]]) -> CheckResult:
    try:
        with anyio.fail_after(CHECK_TIMEOUT_S):
            ok = await check()
    except TimeoutError:
        return CheckResult(ok=False, detail=f"{name} did not answer within {CHECK_TIMEOUT_S}s")
    except Exception as exc:
        return CheckResult(ok=False, detail=f"{name} check failed: {exc}")
    return CheckResult(ok=ok, detail=None if ok else f"{name} did not answer")


async def check_index(state: AppState) -> CheckResult:
    """Ready when a search can be answered: Milvus answers and the collection is loaded."""
    try:
        with anyio.fail_after(CHECK_TIMEOUT_S * 3):
            why = await anyio.to_thread.run_sync(state.index.readiness, abandon_on_cancel=True)
    except TimeoutError:
        return CheckResult(ok=False, detail=f"milvus did not answer within {CHECK_TIMEOUT_S * 3}s")
    except Exception as exc:
        return CheckResult(ok=False, detail=f"milvus check failed: {exc}")
    return CheckResult(ok=why is None, detail=why)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive (no engine is contacted)."""
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
async def readyz(state: StateDep) -> JSONResponse:
    """Ready when the broker answers and Milvus can answer a search (its collection
    loaded); 503 names the engines that are not. Redis is checked and reported, but
    without auth it does not gate readiness: searches are then answered uncached (marked
    ``degraded``). With auth on it does: keys cannot be checked without it."""

    kafka_task = check_kafka(state.settings.kafka.bootstrap)
    results = await asyncio.gather(
        kafka_task, check_index(state), run_check("redis", state.cache.ping)
    )
    checks = dict(zip(("kafka", "milvus", "redis"), results, strict=True))
    redis = checks["redis"]
    if not redis.ok and not state.access.enabled:
        checks["redis"] = CheckResult(
            ok=False, detail=f"{redis.detail}; searches are answered uncached (degraded)"
        )
    gating = [c for name, c in checks.items() if name != "redis" or state.access.enabled]
    ok = all(c.ok for c in gating)
    body = ReadyResponse(status="ok" if ok else "unavailable", checks=checks)
    if not ok:
        failed = [name for name, c in checks.items() if not c.ok]
        log.warning("not ready: %s", ", ".join(failed))
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/metrics", response_class=Response)
async def metrics(state: StateDep) -> Response:
    """Prometheus text exposition of this process' metrics."""
    await _refresh_row_count(state)
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def _refresh_row_count(state: AppState) -> None:
    now = time.monotonic()
    if not state.index_ready or now - state.row_count_at < ROW_COUNT_REFRESH_S:
        return
    state.row_count_at = now
    try:
        with anyio.fail_after(CHECK_TIMEOUT_S):
            rows = await anyio.to_thread.run_sync(state.index.count, abandon_on_cancel=True)
    except Exception as exc:  # a scrape must not fail because the index is slow
        log.debug("row count for /metrics failed: %s", exc)
        return
    state.metrics.index_rows.set(rows)
