"""Redis down in the API: searches answer from the index, uncached and marked degraded;
Redis back: caching resumes under the epoch the index worker's owed bump moved on.
Auth with Redis down fails closed; rate limits count in the process meanwhile."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crossfeed.api.app import create_app
from crossfeed.api.auth import RateLimits
from crossfeed.api.cache import RedisSearchCache
from crossfeed.api.keys import MemoryKeyStore
from crossfeed.api.live import LiveServices
from crossfeed.api.metrics import ApiMetrics
from crossfeed.core.breaker import Outage
from crossfeed.core.settings import ApiSettings, Settings
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.indexer.base import IndexRow
from crossfeed.indexer.epoch import epoch_key
from crossfeed.indexer.memory import InMemoryIndex

RESET_S = 1.0  # long enough that no trial call falls inside a burst of calls


class FakeRedis:
    """The few async Redis calls the search cache makes, with an off switch."""

    def __init__(self) -> None:
        self.up = True
        self.data: dict[str, bytes] = {}
        self.calls_while_down = 0

    def _check(self) -> None:
        if not self.up:
            self.calls_while_down += 1
            raise ConnectionError("Connection refused")

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        self._check()
        return [self.data.get(k) for k in keys]

    async def get(self, key: str) -> bytes | None:
        self._check()
        return self.data.get(key)

    async def set(self, key: str, value: str, ex: int | None = None) -> None:
        self._check()
        self.data[key] = value.encode()

    async def ping(self) -> bool:
        self._check()
        return True

    async def aclose(self) -> None:
        pass

    def bump(self, key: str) -> None:
        """What the index worker's (owed) epoch bump does."""
        self.data[key] = str(int(self.data.get(key, b"0")) + 1).encode()


def _row(embedder: HashingEmbedder, post: str, text: str) -> IndexRow:
    return IndexRow(
        row_id=f"{post}:text:0",
        post_id=post,
        item=0,
        modality="text",
        vector=embedder.embed_texts([text])[0].tolist(),
        created_at_ms=1_700_000_000_000,
        author="a",
        text=text,
        tags=[],
        lang="en",
        model_version=embedder.version,
        media_ref="",
    )


@pytest.fixture
def redis() -> FakeRedis:
    return FakeRedis()


@pytest.fixture
def parts(redis: FakeRedis) -> tuple[HashingEmbedder, InMemoryIndex, RedisSearchCache, ApiMetrics]:
    embedder = HashingEmbedder(dim=16)
    index = InMemoryIndex(dim=16)
    index.ensure_ready(16)
    index.upsert([_row(embedder, "old", "cats on a sunny beach")])
    outage = Outage("redis", failures=2, reset_s=RESET_S)
    cache = RedisSearchCache(redis, prefix="t", ttl_s=60, outage=outage)  # type: ignore[arg-type]
    return embedder, index, cache, ApiMetrics()


@pytest.fixture
def client(parts: Any, listening_port: int) -> Iterator[TestClient]:
    embedder, index, cache, metrics = parts
    s = Settings()
    s.kafka.bootstrap = f"127.0.0.1:{listening_port}"
    s.live.lag_refresh_s = 0
    app = create_app(
        s,
        embedder=embedder,
        index=index,
        cache=cache,
        metrics=metrics,
        live=LiveServices.memory(),
    )
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _search(c: TestClient) -> dict[str, Any]:
    r = c.post("/v1/search", json={"text": "cats", "top_k": 5})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _degraded_gauge(metrics: ApiMetrics) -> float:
    value = metrics.registry.get_sample_value("crossfeed_degraded", {"what": "cache"})
    assert value is not None
    return value


def test_search_answers_uncached_and_marked_while_redis_is_down_then_caches_again(
    client: TestClient, parts: Any, redis: FakeRedis
) -> None:
    embedder, index, _, metrics = parts
    first = _search(client)
    assert first["cached"] is False and first["degraded"] == []
    assert _search(client)["cached"] is True

    redis.up = False
    down = [_search(client) for _ in range(20)]
    assert all(b["cached"] is False and b["degraded"] == ["cache"] for b in down)
    assert all([h["id"] for h in b["results"]] == ["old"] for b in down)
    assert redis.calls_while_down == 2  # then the circuit is open: no call, no timeout
    assert _degraded_gauge(metrics) == 1.0

    # A post indexed during the outage; the worker owes the epoch bump.
    index.upsert([_row(embedder, "new", "cats in the snow")])
    assert {h["id"] for h in _search(client)["results"]} == {"old", "new"}

    redis.up = True
    redis.bump(epoch_key("t"))  # the owed bump, paid by the worker once Redis is back
    time.sleep(RESET_S * 1.5)
    back = _search(client)
    # Not the answer cached before the outage (it lacks "new"): the bump retired it.
    assert back["degraded"] == [] and back["cached"] is False
    assert {h["id"] for h in back["results"]} == {"old", "new"}
    assert _search(client)["cached"] is True
    assert _degraded_gauge(metrics) == 0.0


def test_readyz_stays_ready_without_redis_when_auth_is_off(
    client: TestClient, redis: FakeRedis
) -> None:
    redis.up = False
    r = client.get("/readyz")
    body = r.json()
    assert r.status_code == 200, body
    assert body["checks"]["redis"]["ok"] is False
    assert "uncached" in body["checks"]["redis"]["detail"]


def test_with_auth_on_redis_down_fails_closed_and_readyz_says_so(
    parts: Any, listening_port: int, redis: FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crossfeed.api.keys import KeyStoreUnavailableError

    embedder, index, cache, metrics = parts
    keys = MemoryKeyStore()
    key = asyncio.run(keys.create(("search",), name="t"))[1]
    s = Settings()
    s.kafka.bootstrap = f"127.0.0.1:{listening_port}"
    s.live.lag_refresh_s = 0
    s.api = ApiSettings(CROSSFEED_API_AUTH="on")  # type: ignore[call-arg]
    app = create_app(
        s,
        embedder=embedder,
        index=index,
        cache=cache,
        metrics=metrics,
        live=LiveServices.memory(),
        keys=keys,
        rate_limits=RateLimits.in_memory("100/minute"),
    )

    async def down(key_id: str) -> None:
        raise KeyStoreUnavailableError("redis down")

    monkeypatch.setattr(keys, "_get", down)
    redis.up = False
    with TestClient(app, client=("203.0.113.9", 50000)) as c:
        r = c.post("/v1/search", json={"text": "cats"}, headers={"X-API-Key": key})
        assert r.status_code == 503 and r.json()["error"]["retriable"] is True
        assert c.post("/v1/search", json={"text": "cats"}).status_code == 401
        assert c.get("/readyz").status_code == 503


async def test_rate_limits_count_in_the_process_while_their_store_is_away(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limits = RateLimits.in_memory("3/minute")

    async def broken(*args: Any, **kwargs: Any) -> bool:
        raise ConnectionError("Connection refused")

    shared = limits._limiter
    limits._limiter.hit = broken  # type: ignore[method-assign]
    answers = [await limits.charge("k1", 1) for _ in range(4)]
    assert answers[:3] == [None, None, None] and answers[3] is not None  # never fail open
    assert await limits.charge("k2", 1) is None  # still per key
    assert len([r for r in caplog.records if "counted in this process" in r.getMessage()]) == 1
    del shared.hit  # the store is back
    assert await limits.charge("k1", 1) is None and limits.local_since is None
