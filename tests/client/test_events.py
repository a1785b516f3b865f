"""Server-sent event streams: resume with Last-Event-ID after drops, sync and async.

The server is a small Starlette app on a loopback port: each connection follows a
plan (drop the connection abruptly after n events, end it cleanly, stall), and the
server records the Last-Event-ID every connection sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from crossfeed.client import (
    AsyncClient,
    Client,
    ConnectionFailedError,
    NotFoundError,
    RetryPolicy,
    ServerEvent,
)

TOTAL = 10
FAST = RetryPolicy(attempts=4, wait_initial_s=0.01, wait_max_s=0.05, wait_jitter_s=0.0)


class EventServer:
    """``plans``: per connection, ("drop", n) raise after n events, ("end", n) close cleanly
    after n, ("stall", n) go silent after n, ("fail", status) answer an error; then "all"."""

    def __init__(self, plans: list[tuple[str, int]]) -> None:
        self.plans = list(plans)
        self.seen_ids: list[str | None] = []
        self.app = Starlette(
            routes=[
                Route("/events", self.events),
                Route("/gone", self.gone),
                Route("/hangup", self.hangup),
            ]
        )

    async def events(self, request: Request) -> Response:
        last = request.headers.get("last-event-id")
        self.seen_ids.append(last)
        start = int(last) + 1 if last else 1
        if start > TOTAL:
            return Response(status_code=204)  # the stream is over: do not reconnect
        kind, n = self.plans.pop(0) if self.plans else ("all", TOTAL)
        if kind == "fail":
            body = {"error": {"type": "X", "message": "busy", "retriable": True}}
            return JSONResponse(body, status_code=n, headers={"Retry-After": "0"})

        async def stream() -> AsyncIterator[str]:
            yield "retry: 20\n\n"  # reconnect after 20 ms
            yield ": heartbeat\n\n"
            for count, i in enumerate(range(start, TOTAL + 1), start=1):
                yield f"id: {i}\nevent: tick\ndata: {json.dumps({'n': i})}\n\n"
                if kind != "all" and count >= n:
                    if kind == "drop":
                        raise RuntimeError("connection lost")  # no end of the chunked body
                    if kind == "stall":
                        await asyncio.sleep(30)
                    return

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def gone(self, request: Request) -> Response:
        body = {"error": {"type": "NotFoundError", "message": "no such subscription"}}
        return JSONResponse(body, status_code=404)

    async def hangup(self, request: Request) -> Response:
        async def nothing() -> AsyncIterator[str]:
            return
            yield ""

        return StreamingResponse(nothing(), media_type="text/event-stream")


PLANS = [("drop", 3), ("end", 4), ("fail", 503), ("stall", 1)]


def _numbers(events: list[ServerEvent]) -> list[int]:
    assert all(e.event == "tick" for e in events)
    return [e.json()["n"] for e in events]


def test_sync_stream_resumes_after_drops_without_loss_or_repeats(
    serve: Callable[..., str],
) -> None:
    server = EventServer(PLANS)
    url = serve(server.app)
    with Client(url, retry=FAST, event_read_timeout=0.5) as client:
        events = list(client.events("/events"))
    assert _numbers(events) == list(range(1, TOTAL + 1))
    assert [e.id for e in events] == [str(i) for i in range(1, TOTAL + 1)]
    # New connection after: the drop at 3, the clean end at 7, the 503, the stall at 8,
    # the end at 10 (answered 204, which ends the iteration).
    assert server.seen_ids == [None, "3", "7", "7", "8", "10"]


async def test_async_stream_resumes_after_drops(serve: Callable[..., str]) -> None:
    server = EventServer(PLANS)
    url = serve(server.app)
    async with AsyncClient(url, retry=FAST, event_read_timeout=0.5) as client:
        events = [e async for e in client.events("/events")]
    assert _numbers(events) == list(range(1, TOTAL + 1))
    assert server.seen_ids == [None, "3", "7", "7", "8", "10"]


def test_resume_from_a_given_event_id(serve: Callable[..., str]) -> None:
    server = EventServer([])
    url = serve(server.app)
    with Client(url, retry=FAST) as client:
        events = list(client.events("/events", last_event_id="6"))
    assert _numbers(events) == [7, 8, 9, 10]
    assert server.seen_ids[0] == "6"


def test_errors_and_endless_hangups(serve: Callable[..., str]) -> None:
    server = EventServer([])
    url = serve(server.app)
    with Client(url, retry=FAST) as client:
        with pytest.raises(NotFoundError, match="no such subscription"):
            next(iter(client.events("/gone")))
        with pytest.raises(ConnectionFailedError, match="without an event"):
            list(client.events("/hangup", max_reconnects=2))


async def test_async_consumer_may_stop_early(serve: Callable[..., Any]) -> None:
    server = EventServer([])
    url = serve(server.app)
    async with AsyncClient(url) as client:
        stream = client.events("/events")
        first = await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined]
    assert first.json() == {"n": 1} and server.seen_ids == [None]
