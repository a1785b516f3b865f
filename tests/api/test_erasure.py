"""DELETE /v1/posts/{id} over the fakes: gone from search, posts and cache at once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crossfeed.api.app import create_app
from crossfeed.api.auth import RateLimits
from crossfeed.api.cache import MemorySearchCache
from crossfeed.api.keys import MemoryKeyStore
from crossfeed.api.live import LiveServices
from crossfeed.api.metrics import ApiMetrics
from crossfeed.api.tombstones import MemoryTombstones
from crossfeed.core.settings import ApiSettings, Settings
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.indexer.erasure import Eraser, MemoryErasureLedger, RemovedRows
from crossfeed.indexer.memory import InMemoryIndex


@pytest.fixture
def ledger() -> MemoryErasureLedger:
    return MemoryErasureLedger()


@pytest.fixture
def tombstones() -> MemoryTombstones:
    return MemoryTombstones()


def _app(
    settings: Settings,
    embedder: HashingEmbedder,
    index: InMemoryIndex,
    cache: MemorySearchCache,
    ledger: MemoryErasureLedger,
    tombstones: MemoryTombstones,
    **kw: Any,
) -> Any:
    # The in-memory cache holds the epoch here (Redis does in production).
    eraser = Eraser(
        ledger, lambda post_id: RemovedRows({"memory": index.delete_posts([post_id])}), cache
    )
    return create_app(
        settings,
        embedder=embedder,
        index=index,
        cache=cache,
        metrics=ApiMetrics(),
        live=LiveServices.memory(),
        eraser=eraser,
        tombstones=tombstones,
        **kw,
    )


@pytest.fixture
def erasing(
    settings: Settings,
    embedder: HashingEmbedder,
    index: InMemoryIndex,
    cache: MemorySearchCache,
    ledger: MemoryErasureLedger,
    tombstones: MemoryTombstones,
) -> Iterator[TestClient]:
    with TestClient(_app(settings, embedder, index, cache, ledger, tombstones)) as c:
        yield c


def _ids(r: Any) -> list[str]:
    return [hit["id"] for hit in r.json()["results"]]


def test_an_erased_post_is_gone_from_search_posts_and_the_cache(
    erasing: TestClient, tombstones: MemoryTombstones, ledger: MemoryErasureLedger
) -> None:
    body = {"text": "red sports car on a highway", "top_k": 5}
    before = erasing.post("/v1/search", json=body)
    assert "cars1" in _ids(before)
    assert erasing.post("/v1/search", json=body).json()["cached"] is True

    r = erasing.delete("/v1/posts/cars1")
    assert r.status_code == 200, r.text
    assert r.json()["post_id"] == "cars1" and r.json()["rows_removed"] == 2  # text + image
    assert tombstones.sent == ["cars1"]
    assert asyncio.run(ledger.erased(["cars1"])) == {"cars1"}

    after = erasing.post("/v1/search", json=body)
    assert after.json()["cached"] is False  # the epoch moved: the cached answer is stale
    assert "cars1" not in _ids(after)
    assert erasing.get("/v1/posts/cars1").status_code == 404
    by_post = erasing.post("/v1/search", json={"post_id": "cars1"})
    assert by_post.status_code == 404
    again = erasing.delete("/v1/posts/cars1")  # idempotent
    assert again.status_code == 200 and again.json()["rows_removed"] == 0


def test_a_post_not_indexed_yet_can_be_erased(
    erasing: TestClient, ledger: MemoryErasureLedger
) -> None:
    r = erasing.delete("/v1/posts/not-here-yet")
    assert r.status_code == 200 and r.json()["rows_removed"] == 0
    assert asyncio.run(ledger.erased(["not-here-yet"])) == {"not-here-yet"}


def test_delete_of_a_posts_media_path_is_not_an_erasure(
    erasing: TestClient, tombstones: MemoryTombstones, ledger: MemoryErasureLedger
) -> None:
    """``/v1/posts/{id}/media/{n}`` is the media sub-resource (GET only) everywhere else:
    DELETE on it must not erase a "post" whose id would be ``cars1/media/1``."""
    r = erasing.delete("/v1/posts/cars1/media/1")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    assert tombstones.sent == []
    assert asyncio.run(ledger.erased(["cars1/media/1", "cars1"])) == set()
    assert erasing.get("/v1/posts/cars1").status_code == 200


def test_405_names_every_method_of_the_path(erasing: TestClient) -> None:
    """Routes of included routers (FastAPI wraps them) count too: the Allow header once came
    out empty, and before that named only the first route's methods."""
    assert erasing.put("/v1/posts/cars1").headers["allow"] == "DELETE, GET, HEAD"
    assert erasing.put("/v1/subscriptions").headers["allow"] == "GET, HEAD, POST"


def test_no_broker_no_erasure(
    settings: Settings,
    embedder: HashingEmbedder,
    index: InMemoryIndex,
    cache: MemorySearchCache,
    ledger: MemoryErasureLedger,
) -> None:
    """The tombstone goes first: without it the stream could not finish the job, so
    nothing is erased and the client is told to retry."""
    app = _app(settings, embedder, index, cache, ledger, MemoryTombstones(fail=True))
    with TestClient(app) as c:
        r = c.delete("/v1/posts/cars1")
        assert r.status_code == 503 and r.json()["error"]["retriable"] is True
        assert c.get("/v1/posts/cars1").status_code == 200
    assert asyncio.run(ledger.erased(["cars1"])) == set()


def test_erasure_needs_the_admin_scope_and_is_audited(
    settings: Settings,
    embedder: HashingEmbedder,
    index: InMemoryIndex,
    cache: MemorySearchCache,
    ledger: MemoryErasureLedger,
    tombstones: MemoryTombstones,
    caplog: pytest.LogCaptureFixture,
) -> None:
    keys = MemoryKeyStore()
    search_key = asyncio.run(keys.create(["search"]))[1]
    admin, admin_key = asyncio.run(keys.create(["admin"]))
    settings.api = ApiSettings(CROSSFEED_API_AUTH="on")
    app = _app(
        settings,
        embedder,
        index,
        cache,
        ledger,
        tombstones,
        keys=keys,
        rate_limits=RateLimits.in_memory("100/minute"),
    )
    with TestClient(app) as c, caplog.at_level("INFO", logger="crossfeed.audit"):
        assert c.delete("/v1/posts/cars1").status_code == 401
        forbidden = c.delete("/v1/posts/cars1", headers={"X-API-Key": search_key})
        assert forbidden.status_code == 403
        ok = c.delete("/v1/posts/cars1", headers={"X-API-Key": admin_key})
        assert ok.status_code == 200
    [line] = [r.getMessage() for r in caplog.records if r.name == "crossfeed.audit"]
    assert "post_id='cars1'" in line and f"by=key:{admin.id}" in line and "rows_removed=2" in line
    assert "red sports car" not in line  # never the post's content
