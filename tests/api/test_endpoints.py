"""GET /v1/posts, /healthz, /readyz, /metrics, and engine failures over HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi.testclient import TestClient

from crossfeed.api.app import create_app
from crossfeed.api.cache import MemorySearchCache
from crossfeed.api.metrics import ApiMetrics
from crossfeed.core.settings import Settings
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.indexer.base import Hit, IndexRow, SearchFilter
from crossfeed.indexer.exceptions import IndexUnavailableError
from crossfeed.indexer.memory import InMemoryIndex


def test_get_post_returns_stored_fields_without_vectors(client: TestClient) -> None:
    r = client.get("/v1/posts/cars1")
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == "cars1"
    assert body["author"] == "author-cars1"
    assert body["text"] == "red sports car on a highway"
    assert body["tags"] == ["cars"]
    assert body["lang"] == "en"
    assert body["created_at"].startswith("2024-05-06T00:00:00")
    assert [(i["item"], i["modality"]) for i in body["items"]] == [(0, "text"), (1, "image")]
    assert body["items"][1]["media_ref"] == "https://example.org/cars1/1.png"
    assert "vector" not in r.text


def test_get_post_unknown_is_404(client: TestClient) -> None:
    r = client.get("/v1/posts/missing")
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "NotFoundError"


def test_get_post_id_with_slash_and_quotes(
    client: TestClient, index: InMemoryIndex, embedder: HashingEmbedder
) -> None:
    post = 'src/a"b'
    index.upsert(
        [
            IndexRow(
                row_id=f"{post}:text:0",
                post_id=post,
                item=0,
                modality="text",
                vector=embedder.embed_texts(["x"])[0].tolist(),
                created_at_ms=0,
                author="",
                text="x",
                tags=(),
                lang="",
                model_version=embedder.version,
                media_ref="",
            )
        ]
    )
    r = client.get("/v1/posts/src/a%22b")
    assert r.status_code == 200
    assert r.json()["id"] == post
    assert r.json()["lang"] is None


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_ok_when_all_engines_answer(client: TestClient) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ok"
    assert set(r.json()["checks"]) == {"kafka", "milvus", "redis"}


def test_readyz_names_a_dead_broker_and_cache(
    settings: Settings,
    embedder: HashingEmbedder,
    index: InMemoryIndex,
    cache: MemorySearchCache,
    free_port: int,
) -> None:
    settings.kafka.bootstrap = f"127.0.0.1:{free_port}"
    cache.available = False
    app = create_app(settings, embedder=embedder, index=index, cache=cache)
    with TestClient(app) as c:
        r = c.get("/readyz")
    assert r.status_code == 503
    checks = r.json()["checks"]
    assert checks["kafka"]["ok"] is False and str(free_port) in checks["kafka"]["detail"]
    assert checks["redis"]["ok"] is False
    assert checks["milvus"]["ok"] is True


def test_metrics_exposes_search_and_cache_counters(client: TestClient) -> None:
    client.post("/v1/search", json={"text": "cats"})
    client.post("/v1/search", json={"text": "cats"})
    text = client.get("/metrics").text
    assert "crossfeed_cache_hits_total 1.0" in text
    assert "crossfeed_cache_misses_total 1.0" in text
    assert 'crossfeed_http_requests_total{route="/v1/search",status="200"} 2.0' in text
    assert 'crossfeed_search_seconds_count{cached="true"} 1.0' in text
    assert "crossfeed_index_rows" in text


class _DownIndex(InMemoryIndex):
    """Answers setup but fails every search like an unreachable Milvus."""

    def search(self, vector: Sequence[float], top_k: int, flt: SearchFilter) -> list[Hit]:
        raise IndexUnavailableError("milvus at 127.0.0.1:1 unreachable")

    def ping(self) -> bool:
        return False


def test_unreachable_index_answers_503_with_retry_after(listening_port: int) -> None:
    settings = Settings()
    settings.kafka.bootstrap = f"127.0.0.1:{listening_port}"
    settings.api.retry_budget_s = 0.3
    app = create_app(
        settings,
        embedder=HashingEmbedder(dim=16),
        index=_DownIndex(),
        cache=MemorySearchCache(),
        metrics=ApiMetrics(),
    )
    with TestClient(app) as c:
        r = c.post("/v1/search", json={"text": "anything"})
        assert r.status_code == 503
        assert r.headers["retry-after"]
        error = r.json()["error"]
        assert error["retriable"] is True
        assert "127.0.0.1:1" not in error["message"]  # engine details stay in the log
        ready = c.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["milvus"]["ok"] is False


def test_openapi_documents_both_search_bodies(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    content = spec["paths"]["/v1/search"]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    assert "SearchRequest" in spec["components"]["schemas"]
    assert "SearchFilters" in spec["components"]["schemas"]


class _FlakyIndex(InMemoryIndex):
    """Fails its first searches like a Milvus that is restarting."""

    failures = 2

    def search(self, vector: Sequence[float], top_k: int, flt: SearchFilter) -> list[Hit]:
        if self.failures:
            self.failures -= 1
            raise IndexUnavailableError("milvus is restarting")
        return super().search(vector, top_k, flt)


def _app_with(index: InMemoryIndex, listening_port: int, budget_s: float) -> Any:
    settings = Settings()
    settings.kafka.bootstrap = f"127.0.0.1:{listening_port}"
    settings.api.retry_budget_s = budget_s
    return create_app(
        settings,
        embedder=HashingEmbedder(dim=16),
        index=index,
        cache=MemorySearchCache(),
        metrics=ApiMetrics(),
    )


def test_a_retriable_engine_error_is_retried_within_the_request_budget(
    listening_port: int,
) -> None:
    flaky = _FlakyIndex(dim=16)
    with TestClient(_app_with(flaky, listening_port, budget_s=5.0)) as c:
        r = c.post("/v1/search", json={"text": "anything"})
    assert r.status_code == 200, r.text
    assert flaky.failures == 0
    # Without a budget the same outage answers 503 at once.
    with TestClient(_app_with(_FlakyIndex(dim=16), listening_port, budget_s=0.0)) as c:
        assert c.post("/v1/search", json={"text": "anything"}).status_code == 503


class _LoadingIndex(InMemoryIndex):
    def readiness(self) -> str | None:
        return "collection crossfeed_posts is loading (40%)"


def test_readyz_is_not_ready_while_the_collection_loads(listening_port: int) -> None:
    """Ready must mean a search can be answered: a Milvus that answers pings while its
    collection is still loading made the first search take 15.7 s."""
    with TestClient(_app_with(_LoadingIndex(dim=16), listening_port, budget_s=0.0)) as c:
        r = c.get("/readyz")
    assert r.status_code == 503
    milvus = r.json()["checks"]["milvus"]
    assert milvus["ok"] is False and "loading (40%)" in milvus["detail"]
