"""The API over the real Milvus and Redis (hashing embedder instead of the models).

Unique collection and key prefix per test; both are removed afterwards.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Sequence

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from crossfeed.api.app import create_app
from crossfeed.core.settings import Settings
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.indexer.base import Hit, IndexRow, SearchFilter
from crossfeed.indexer.epoch import IndexEpoch
from crossfeed.indexer.milvus import MilvusIndex

pytestmark = pytest.mark.integration

DIM = 32
TEXTS = {
    "cats": "cute cats sleeping on a sofa",
    "dogs": "a dog running on the beach",
    "cars": "red sports car on a highway",
}


class CountingMilvusIndex(MilvusIndex):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.searches = 0
        self.lookups = 0

    def search(self, vector: Sequence[float], top_k: int, flt: SearchFilter) -> list[Hit]:
        self.searches += 1
        return super().search(vector, top_k, flt)

    def get_post(self, post_id: str) -> list[IndexRow]:
        self.lookups += 1
        return super().get_post(post_id)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def settings(engines: object, unique_name: Callable[[str], str]) -> Iterator[Settings]:
    s = Settings()
    s.milvus.collection = unique_name("api_it")
    s.redis.key_prefix = s.milvus.collection
    url = s.redis.url.get_secret_value()  # tests may point s at a dead Redis
    yield s
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{s.redis.key_prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def embedder() -> HashingEmbedder:
    return HashingEmbedder(dim=DIM)


@pytest.fixture
def index(settings: Settings, embedder: HashingEmbedder) -> Iterator[CountingMilvusIndex]:
    idx = CountingMilvusIndex(settings.milvus, consistency_level="Strong")
    idx.ensure_ready(DIM)
    idx.upsert(
        [
            IndexRow(
                row_id=f"{post}:text:0",
                post_id=post,
                item=0,
                modality="text",
                vector=embedder.embed_texts([text])[0].tolist(),
                created_at_ms=1_714_521_600_000,
                author="someone",
                text=text,
                tags=(post,),
                lang="en",
                model_version=embedder.version,
                media_ref="",
            )
            for post, text in TEXTS.items()
        ]
    )
    yield idx
    idx.drop()
    idx.close()


@pytest.fixture
def client(
    settings: Settings, embedder: HashingEmbedder, index: CountingMilvusIndex
) -> Iterator[TestClient]:
    # The cache is built from settings: the real Redis.
    with TestClient(create_app(settings, embedder=embedder, index=index)) as c:
        yield c


def test_cache_hit_touches_neither_encoder_nor_milvus(
    client: TestClient, embedder: HashingEmbedder, index: CountingMilvusIndex
) -> None:
    first = client.post("/v1/search", json={"text": "Cats on a sofa", "top_k": 2})
    assert first.status_code == 200, first.text
    assert first.json()["cached"] is False
    assert first.json()["results"][0]["id"] == "cats"
    calls = (embedder.calls["text"], index.searches)
    second = client.post("/v1/search", json={"text": "cats  on a SOFA", "top_k": 2}).json()
    assert second["cached"] is True
    assert second["results"] == first.json()["results"]
    assert (embedder.calls["text"], index.searches) == calls


def test_post_query_cache_hit_skips_the_lookup(
    client: TestClient, index: CountingMilvusIndex
) -> None:
    first = client.post("/v1/search", json={"post_id": "cats"}).json()
    assert "cats" not in [r["id"] for r in first["results"]]
    lookups = index.lookups
    assert client.post("/v1/search", json={"post_id": "cats"}).json()["cached"] is True
    assert index.lookups == lookups


def test_epoch_bump_invalidates(
    client: TestClient, settings: Settings, index: CountingMilvusIndex
) -> None:
    q = {"text": "dog on the beach", "top_k": 1}
    first = client.post("/v1/search", json=q).json()
    assert client.post("/v1/search", json=q).json()["cached"] is True
    epoch = IndexEpoch.from_settings(settings.redis)
    try:
        new = epoch.bump()
    finally:
        epoch.close()
    searches = index.searches
    after = client.post("/v1/search", json=q).json()
    assert after["cached"] is False
    assert after["epoch"] == new == (first["epoch"] or 0) + 1
    assert index.searches == searches + 1


def test_get_post_over_milvus(client: TestClient) -> None:
    r = client.get("/v1/posts/cars")
    assert r.status_code == 200
    assert r.json()["text"] == TEXTS["cars"]
    assert client.get("/v1/posts/nope").status_code == 404


def test_readyz_ok_then_dead_milvus_is_named(
    settings: Settings, embedder: HashingEmbedder, client: TestClient
) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text

    settings.milvus.uri = f"http://127.0.0.1:{_closed_port()}"
    dead = MilvusIndex(settings.milvus, timeout_s=1.0)
    with TestClient(create_app(settings, embedder=embedder, index=dead)) as c:
        r = c.get("/readyz")
        assert r.status_code == 503
        checks = r.json()["checks"]
        assert checks["milvus"]["ok"] is False
        assert checks["redis"]["ok"] is True
        # Searching answers 503 (retriable), not 500.
        s = c.post("/v1/search", json={"text": "cats"})
        assert s.status_code == 503
        assert s.json()["error"]["retriable"] is True


def test_dead_redis_degrades_to_uncached_and_stays_ready_without_auth(
    settings: Settings, embedder: HashingEmbedder, index: CountingMilvusIndex
) -> None:
    settings.redis.url = SecretStr(f"redis://127.0.0.1:{_closed_port()}/0")
    with TestClient(create_app(settings, embedder=embedder, index=index)) as c:
        for _ in range(3):
            r = c.post("/v1/search", json={"text": "red car", "top_k": 1})
            assert r.status_code == 200, r.text
            assert r.json()["cached"] is False and r.json()["degraded"] == ["cache"]
            assert r.json()["epoch"] is None
            assert r.json()["results"][0]["id"] == "cars"
        # Searches still answer, so the API stays in rotation; the check says why.
        ready = c.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"]["redis"]["ok"] is False


def test_readyz_waits_until_a_released_collection_is_loaded_again(
    settings: Settings, embedder: HashingEmbedder, client: TestClient
) -> None:
    """After an engine restart Milvus answers before its collection is loaded: not ready
    until a search can be answered; the check itself asks Milvus to load it."""
    import time

    from pymilvus import MilvusClient

    assert client.get("/readyz").status_code == 200
    raw = MilvusClient(uri=settings.milvus.uri)
    try:
        raw.release_collection(settings.milvus.collection)
        first = client.get("/readyz")
        assert first.status_code == 503, first.text
        detail = first.json()["checks"]["milvus"]["detail"]
        assert settings.milvus.collection in detail and "load" in detail
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the collection never became ready"
            time.sleep(0.5)
        assert client.post("/v1/search", json={"text": "cats"}).status_code == 200
    finally:
        raw.close()
