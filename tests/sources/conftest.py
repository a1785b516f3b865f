"""Local stand-ins for the services: replay servers on 127.0.0.1 speaking their wire formats.

* :class:`JetstreamReplay`: a WebSocket server (``websockets``) replaying
  ``fixtures/jetstream_session.jsonl`` like Jetstream's ``/subscribe``: a connection
  with ``cursor`` starts at the first frame with ``time_us >= cursor``, one without
  starts live (at the frames not yet published).
* :class:`MastodonReplay`: a Starlette app (served by uvicorn through ``serve``)
  replaying ``fixtures/mastodon_public.sse`` on the streaming endpoints, answering
  ``/api/v2/instance`` and the timeline endpoints (``min_id`` catch-up) from what it
  has published, and checking the bearer token.

Each connection follows a plan, a list of steps: ``("send", n, rate)`` n frames (None:
all the rest) at ``rate`` per second (None: at once), ``("pause", s)`` silence,
``("quiet", s)`` heartbeats only (Mastodon), ``("drop",)`` cut the connection,
``("close",)`` end it cleanly, ``("offline", n)`` n frames published that this client
will never see live. With no plan left, a connection gets everything that remains,
then stays open. The servers record what every connection asked for.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse

FIXTURES = Path(__file__).parent / "fixtures"
Plan = list[tuple[Any, ...]]


def jetstream_frames() -> list[str]:
    return (FIXTURES / "jetstream_session.jsonl").read_text(encoding="utf-8").splitlines()


def mastodon_blocks() -> list[str]:
    text = (FIXTURES / "mastodon_public.sse").read_text(encoding="utf-8")
    return [b for b in text.split("\n\n") if b.strip()]


# --------------------------------------------------------------------------- Jetstream


class JetstreamReplay:
    """A Jetstream replay server in its own thread and event loop."""

    def __init__(
        self, frames: list[str], plans: list[Plan] | None = None, reject: list[int] | None = None
    ) -> None:
        self.frames = frames
        self.times: list[int] = []
        last = 0
        for frame in frames:
            try:
                data = json.loads(frame)
                data = data.get("payload", data)
                last = int(data["time_us"])
            except (ValueError, KeyError, TypeError, AttributeError):
                pass  # an unreadable frame goes out beside its neighbour
            self.times.append(last)
        self.plans: deque[Plan] = deque(plans or [])
        self.reject: deque[int] = deque(reject or [])  # statuses for the first handshakes
        self.handshakes = 0
        self.head = 0  # frames published so far (live position)
        self.requests: list[dict[str, list[str]]] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.url = ""

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with serve(
            self._handler, "127.0.0.1", 0, process_request=self._process_request
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}/subscribe"
            self._ready.set()
            await self._stop.wait()

    def _process_request(self, conn: ServerConnection, request: WsRequest) -> WsResponse | None:
        self.handshakes += 1
        if self.reject:
            return conn.respond(self.reject.popleft(), "refused by the replay server\n")
        return None

    def start(self) -> JetstreamReplay:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("replay server did not start")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    def cursors(self) -> list[int | None]:
        return [int(q["cursor"][0]) if "cursor" in q else None for q in self.requests]

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        query = parse_qs(urlsplit(ws.request.path).query)
        self.requests.append(query)
        if "cursor" in query:
            cursor = int(query["cursor"][0])
            idx = next((i for i, t in enumerate(self.times) if t >= cursor), len(self.frames))
        else:
            idx = self.head
        plan = self.plans.popleft() if self.plans else [("send", None, None)]
        for step in plan:
            kind = step[0]
            if kind == "send":
                count = len(self.frames) - idx if step[1] is None else step[1]
                for _ in range(count):
                    if idx >= len(self.frames):
                        break
                    await ws.send(self.frames[idx])
                    idx += 1
                    self.head = max(self.head, idx)
                    if step[2]:
                        await asyncio.sleep(1 / step[2])
            elif kind == "pause":
                await asyncio.sleep(step[1])
            elif kind == "offline":
                self.head = max(self.head, idx) + step[1]
            elif kind == "drop":
                ws.transport.abort()  # no close frame: the client sees the connection die
                return
            elif kind == "close":
                await ws.close()
                return
        await ws.wait_closed()


@pytest.fixture
def jetstream() -> Iterator[Callable[..., JetstreamReplay]]:
    servers: list[JetstreamReplay] = []

    def start(plans: list[Plan] | None = None, **kwargs: Any) -> JetstreamReplay:
        server = JetstreamReplay(kwargs.pop("frames", None) or jetstream_frames(), plans, **kwargs)
        servers.append(server.start())
        return server

    yield start
    for server in servers:
        server.stop()


# --------------------------------------------------------------------------- Mastodon

TOKEN = "replay-token-123"


class MastodonReplay:
    """The streaming and REST endpoints a connector uses, over one recorded session."""

    def __init__(self, blocks: list[str], plans: list[Plan] | None = None) -> None:
        self.blocks = blocks
        self.plans: deque[Plan] = deque(plans or [])
        self.head = 0
        self.streams: list[dict[str, Any]] = []  # one per stream connection
        self.timeline_queries: list[dict[str, str]] = []
        self.streaming_url = ""  # what /api/v2/instance advertises (set once served)
        self.app = Starlette(
            routes=[
                Route("/api/v2/instance", self.instance),
                Route("/api/v1/streaming/{name:path}", self.stream),
                Route("/api/v1/timelines/public", self.timeline),
                Route("/api/v1/timelines/tag/{tag}", self.timeline),
            ]
        )

    @staticmethod
    def _authorized(request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {TOKEN}"

    @staticmethod
    def _unauthorized() -> Response:
        return JSONResponse({"error": "The access token is invalid"}, status_code=401)

    async def instance(self, request: Request) -> Response:
        return JSONResponse(
            {
                "domain": "social.example",
                "configuration": {"urls": {"streaming": self.streaming_url}},
            }
        )

    def _published(self) -> list[dict[str, Any]]:
        statuses = []
        for block in self.blocks[: self.head]:
            lines = block.split("\n")
            if lines[0] == "event: update" and len(lines) > 1:
                try:
                    statuses.append(json.loads(lines[1].removeprefix("data: ")))
                except ValueError:
                    continue
        return statuses

    async def timeline(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        params = dict(request.query_params)
        self.timeline_queries.append(params)
        min_id = params.get("min_id", "")
        limit = int(params.get("limit", "20"))

        def key(s: dict[str, Any]) -> tuple[int, str]:
            return (len(s["id"]), s["id"])

        newer = [s for s in self._published() if key(s) > (len(min_id), min_id)]
        page = sorted(newer, key=key)[:limit]  # immediately newer than min_id...
        return JSONResponse(list(reversed(page)))  # ...newest first, as Mastodon answers

    async def stream(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        self.streams.append(
            {
                "path": request.url.path,
                "params": dict(request.query_params),
                "port": request.url.port,
                "head": self.head,
            }
        )
        plan = self.plans.popleft() if self.plans else [("send", None, None)]
        start = self.head

        async def events() -> AsyncIterator[str]:
            idx = start
            yield ":)\n\n"
            for step in plan:
                kind = step[0]
                if kind == "send":
                    count = len(self.blocks) - idx if step[1] is None else step[1]
                    for _ in range(count):
                        if idx >= len(self.blocks):
                            break
                        yield self.blocks[idx] + "\n\n"
                        idx += 1
                        self.head = max(self.head, idx)
                        if step[2]:
                            await asyncio.sleep(1 / step[2])
                elif kind == "pause":
                    await asyncio.sleep(step[1])
                elif kind == "quiet":
                    for _ in range(int(step[1] / 0.1)):
                        yield ":thump\n\n"
                        await asyncio.sleep(0.1)
                elif kind == "offline":
                    self.head = max(self.head, idx) + step[1]
                elif kind == "drop":
                    raise RuntimeError("replay: connection dropped")  # no end of the body
                elif kind == "close":
                    return
            while True:
                yield ":thump\n\n"
                await asyncio.sleep(0.2)

        return StreamingResponse(events(), media_type="text/event-stream")


@pytest.fixture
def mastodon(serve: Callable[..., str]) -> Callable[..., tuple[MastodonReplay, str]]:
    """``mastodon(plans)`` -> (the replay, its base URL); /api/v2/instance points the
    streaming API at a second server (``streaming_elsewhere=True``) or at itself."""

    def start(
        plans: list[Plan] | None = None, *, streaming_elsewhere: bool = False
    ) -> tuple[MastodonReplay, str]:
        replay = MastodonReplay(mastodon_blocks(), plans)
        url = serve(replay.app)
        stream_url = serve(replay.app) if streaming_elsewhere else url
        replay.streaming_url = stream_url.replace("http://", "ws://")
        return replay, url

    return start


@pytest.fixture
def token() -> str:
    return TOKEN
