"""A client that never reads its event stream must not make the server read (and hold)
the whole backlog: events are taken from the store only as the socket drains.

Runs a real uvicorn server (its flow control is what a deployment has) over the
in-memory store; no engines needed.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from crossfeed.api.app import create_app
from crossfeed.api.cache import MemorySearchCache
from crossfeed.api.live import LiveServices
from crossfeed.live.base import Match, MatchEvent
from crossfeed.live.memory import MemorySubscriptions

BACKLOG = 30_000
TEXT = "x" * 1000  # ~1 KB per event: a 30 MB backlog


class CountingStore(MemorySubscriptions):
    def __init__(self) -> None:
        super().__init__(events_maxlen=BACKLOG)
        self.handed_out = 0

    async def read_events(
        self, sub_id: str, after: str, *, count: int, block_s: float
    ) -> list[MatchEvent]:
        events = await super().read_events(sub_id, after, count=count, block_s=block_s)
        self.handed_out += len(events)
        return events


@pytest.fixture
def server(settings: Any, embedder: Any, index: Any) -> Iterator[tuple[str, CountingStore]]:
    import uvicorn

    store = CountingStore()
    app = create_app(
        settings,
        embedder=embedder,
        index=index,
        cache=MemorySearchCache(),
        live=LiveServices.memory(store),
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"127.0.0.1:{port}", store
    srv.should_exit = True
    thread.join(timeout=10)


def test_a_stalled_sse_client_holds_back_the_server(server: tuple[str, CountingStore]) -> None:
    address, store = server
    r = httpx.post(f"http://{address}/v1/subscriptions", json={"text": "cats", "min_score": 0.5})
    sid = r.json()["id"]
    for start in range(0, BACKLOG, 1000):
        store.record(
            [
                Match(sid, f"p{i}", 0.9, {"post_id": f"p{i}", "score": 0.9, "text": TEXT})
                for i in range(start, start + 1000)
            ]
        )
    host, port = address.split(":")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect((host, int(port)))
    stalled.sendall(
        f"GET /v1/subscriptions/{sid}/events HTTP/1.1\r\nHost: {address}\r\n\r\n".encode()
    )
    time.sleep(3)  # it never reads
    held_back = store.handed_out
    stalled.close()
    # Only what fits in the socket buffers (a few MB at most) plus one read was taken.
    assert 0 < held_back < BACKLOG // 3, held_back
    print(f"\nevents taken from the store for a stalled client: {held_back} of {BACKLOG}")
    # A client that reads gets the events, in order.
    got: list[str] = []
    with httpx.stream("GET", f"http://{address}/v1/subscriptions/{sid}/events", timeout=30) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                got.append(httpx.Response(200, content=line[5:]).json()["post_id"])
                if len(got) == 2000:
                    break
    assert got == [f"p{i}" for i in range(2000)]
