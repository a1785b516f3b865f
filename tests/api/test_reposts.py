"""GET /v1/posts/{id} of a repost answers with the original it repeats; a post (or a
repost's original) indexed under another model version only is found there."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crossfeed.api.app import create_app
from crossfeed.api.cache import MemorySearchCache
from crossfeed.api.live import LiveServices
from crossfeed.api.metrics import ApiMetrics
from crossfeed.core.settings import Settings
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.indexer.base import IndexRow
from crossfeed.indexer.memory import InMemoryIndex


def _row(post: str, text: str, version: str) -> IndexRow:
    return IndexRow(
        row_id=f"{post}:text:0",
        post_id=post,
        item=0,
        modality="text",
        vector=[1.0] + [0.0] * 15,
        created_at_ms=1_700_000_000_000,
        author="first-author",
        text=text,
        tags=("cats",),
        lang="en",
        model_version=version,
        media_ref="",
    )


OTHER_VERSION = {"old-orig": [_row("old-orig", "indexed under v0 only", "v0")]}


@pytest.fixture
def client(listening_port: int) -> Iterator[TestClient]:
    embedder = HashingEmbedder(dim=16)
    index = InMemoryIndex(dim=16)
    index.ensure_ready(16)
    index.upsert([_row("orig", "a cat on a mat", embedder.version)])
    live = LiveServices.memory()
    live.reposts.update({"rp": "orig", "rp-old": "old-orig", "rp-gone": "erased"})
    s = Settings()
    s.kafka.bootstrap = f"127.0.0.1:{listening_port}"
    s.live.lag_refresh_s = 0
    app = create_app(
        s,
        embedder=embedder,
        index=index,
        metrics=ApiMetrics(),
        live=live,
        cache=MemorySearchCache(),
        elsewhere=lambda post_id: OTHER_VERSION.get(post_id, []),
    )
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_a_repost_answers_with_its_original(client: TestClient) -> None:
    r = client.get("/v1/posts/rp")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["id"] == "rp" and body["duplicate_of"] == "orig"
    assert body["text"] == "a cat on a mat" and body["author"] == "first-author"
    original = client.get("/v1/posts/orig").json()
    assert original["duplicate_of"] is None and original["items"] == body["items"]


def test_a_post_or_an_original_of_another_model_version_is_found_there(
    client: TestClient,
) -> None:
    own = client.get("/v1/posts/old-orig").json()
    assert own["items"][0]["model_version"] == "v0"
    repost = client.get("/v1/posts/rp-old").json()
    assert repost["duplicate_of"] == "old-orig" and repost["text"] == "indexed under v0 only"


def test_searching_by_a_repost_uses_its_originals_vector(client: TestClient) -> None:
    r = client.post("/v1/search", json={"post_id": "rp", "top_k": 5})
    assert r.status_code == 200, r.text
    assert [h["id"] for h in r.json()["results"]] == ["orig"]  # the original it repeats
    assert client.post("/v1/search", json={"post_id": "nobody"}).status_code == 404


def test_unknown_posts_and_reposts_of_erased_posts_are_404(client: TestClient) -> None:
    assert client.get("/v1/posts/nobody").status_code == 404
    assert client.get("/v1/posts/rp-gone").status_code == 404


@pytest.mark.integration
@pytest.mark.usefixtures("engines")
async def test_the_redis_dedupe_store_records_reposts_for_the_api(redis_dedupe: Any) -> None:
    store, client, prefix = redis_dedupe
    live = LiveServices(subscriptions=None, redis=client, prefix=prefix)  # type: ignore[arg-type]
    assert await store.claim("h1", "first") == "first"
    assert await store.claim("h1", "again") == "first"
    assert await live.original_of("again") == "first"
    assert await live.original_of("first") is None
    await store.forget("again")
    assert await live.original_of("again") is None
