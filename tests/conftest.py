"""Fixtures shared by all tests.

``serve`` runs an ASGI app with uvicorn on a loopback port (tests of HTTP clients
talk to a real server, never to a mock). ``engines`` (session scope) makes the three
engines reachable at the URLs the environment configures: whatever is not already
running is started with
:func:`crossfeed.ops.engines.control.up`, pidfiles under ``<repo>/.state/test``, and only
that is stopped at the end. If an engine cannot be started the requesting tests
*error*: integration tests never skip silently. Only integration tests request it,
so unit tests never start anything.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from crossfeed.core.settings import Settings, StateSettings

if TYPE_CHECKING:
    from crossfeed.ops.engines.control import EngineStatus

TEST_STATE_DIR = Path(__file__).resolve().parents[1] / ".state" / "test"
_NAME_PREFIX = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")


def make_name(prefix: str) -> str:
    """``<prefix>_<10 hex>``: valid as a Kafka topic, a consumer group, a Milvus
    collection and a Redis key prefix, and unique across test runs."""
    if not _NAME_PREFIX.match(prefix):
        raise ValueError(f"name prefix {prefix!r}: letters, digits, '_' (max 41)")
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


# Property-based tests (hypothesis) run twice: a short pass in every run, and a long pass
# marked `slow` whose size is CROSSFEED_PROPERTY_EXAMPLES examples per property, e.g.
#   CROSSFEED_PROPERTY_EXAMPLES=10000 .venv/bin/pytest -m slow -k property
PROPERTY_EXAMPLES_SHORT = 100
PROPERTY_EXAMPLES_LONG = int(os.environ.get("CROSSFEED_PROPERTY_EXAMPLES", "1000"))


@pytest.fixture(
    params=[
        pytest.param(PROPERTY_EXAMPLES_SHORT, id="short"),
        pytest.param(PROPERTY_EXAMPLES_LONG, id="long", marks=pytest.mark.slow),
    ]
)
def examples(request: pytest.FixtureRequest) -> int:
    """How many examples a property test should generate (short pass, or long + slow)."""
    return int(request.param)


@pytest.fixture
def settings() -> Settings:
    """Fresh settings from the environment (tests may mutate their copy)."""
    return Settings()


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """``unique_name("infra")`` -> ``"infra_1a2b3c4d5e"`` (see :func:`make_name`)."""
    return make_name


class Server:
    """A uvicorn server on 127.0.0.1 in a thread (``serve`` fixture); ``stop()`` ends it."""

    def __init__(self, app: Any, sock: socket.socket | None = None) -> None:
        self.sock = sock or socket.socket()
        if sock is None:
            self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        import uvicorn

        config = uvicorn.Config(
            app, log_level="critical", lifespan="on", timeout_graceful_shutdown=1
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def start(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    """``serve(app)`` -> the URL of an ASGI app served by uvicorn on 127.0.0.1 once it
    answers; ``serve(app, delay=s)`` -> its URL at once, the port refusing connections
    until the server starts ``s`` seconds later. Stopped after the test."""
    servers: list[Server] = []
    timers: list[threading.Timer] = []

    def start(app: Any, delay: float = 0.0) -> str:
        server = Server(app)
        servers.append(server)
        if delay <= 0:
            return server.start().url
        timer = threading.Timer(delay, server.start)
        timers.append(timer)
        timer.start()
        return server.url

    yield start
    for timer in timers:
        timer.join()
    for server in servers:
        if server.thread.is_alive():
            server.stop()
        else:
            server.sock.close()


@pytest.fixture(scope="session")
def engines() -> Iterator[list[EngineStatus]]:
    """Kafka-protocol broker, Milvus and Redis, ready; yields their EngineStatus list."""
    from crossfeed.ops.engines.control import down, up

    s = Settings()
    s.state = StateSettings(state_dir=TEST_STATE_DIR)
    statuses = up(s)
    try:
        yield statuses
    finally:
        ours = [st.name for st in statuses if st.action == "started"]
        if ours:
            down(s, ours)


@pytest.fixture
async def redis_dedupe() -> Any:
    """``(store, client, prefix)``: a RedisDedupeStore on a private key prefix of the real
    Redis (TTL 60 s) and a plain client; every key under the prefix is deleted after."""
    import redis.asyncio as aioredis

    from crossfeed.core.settings import RedisSettings
    from crossfeed.streams.dedupe import RedisDedupeStore

    url = RedisSettings().url.get_secret_value()
    prefix = f"crossfeed-test-streams-{uuid.uuid4().hex[:8]}"
    store = RedisDedupeStore(url, key_prefix=prefix, ttl_s=60)
    client = aioredis.Redis.from_url(url)
    try:
        yield store, client, prefix
    finally:
        keys = [k async for k in client.scan_iter(f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await store.close()
