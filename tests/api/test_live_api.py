"""Freshness on answers, the cache race, thumbnails, /v1/stats and the dashboard page."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient

from crossfeed.api.app import create_app
from crossfeed.api.cache import MemorySearchCache
from crossfeed.api.live import LiveServices
from crossfeed.core.schema import VectorRecord
from crossfeed.core.settings import KafkaSettings, Settings
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.indexer.base import Hit, IndexRow, SearchFilter
from crossfeed.indexer.memory import InMemoryIndex
from crossfeed.live.thumbs import Thumbnail
from crossfeed.streams.index import IndexStage
from crossfeed.streams.metrics import WorkerMetrics
from crossfeed.streams.testing import RecordingPublisher


class BoundedStaleIndex(InMemoryIndex):
    """Milvus' "Bounded" consistency in miniature: a write becomes visible to searches
    only once settled, or to a search whose ``fence`` covers it."""

    def __init__(self) -> None:
        super().__init__()
        self._writes = 0
        self._settled = 0
        self._written_at: dict[str, int] = {}

    def upsert(self, rows: Sequence[IndexRow]) -> int:
        n = super().upsert(rows)
        self._writes += 1
        for r in rows:
            self._written_at[r.row_id] = self._writes
        return n

    def write_fence(self) -> int | None:
        return self._writes

    def settle(self) -> None:
        self._settled = self._writes

    def search(
        self, vector: Sequence[float], top_k: int, flt: SearchFilter, *, fence: int | None = None
    ) -> list[Hit]:
        visible = max(self._settled, fence or 0)
        hits = super().search(vector, 10_000, flt)
        return [h for h in hits if self._written_at.get(h.row.row_id, 0) <= visible][:top_k]


class CacheEpoch:
    """The index stage's epoch writer over the memory cache (the API's view of it)."""

    def __init__(self, cache: MemorySearchCache) -> None:
        self.cache = cache

    def bump(self, fence: int | None = None) -> int:
        return self.cache.bump(fence)


def _record(post_id: str, text: str, emb: HashingEmbedder) -> bytes:
    now = datetime(2024, 5, 9, tzinfo=UTC)
    return (
        VectorRecord(
            post_id=post_id,
            item=0,
            modality="text",
            vector=emb.embed_texts([text])[0].tolist(),
            model_version=emb.version,
            created_at=now,
            embedded_at=now,
            author="a",
            text=text,
            tags=[],
            lang="en",
            media_ref=None,
            produced_at=now,
        )
        .model_dump_json()
        .encode()
    )


def test_a_search_right_after_an_epoch_bump_never_caches_a_result_without_the_new_rows(
    settings: Settings, embedder: HashingEmbedder
) -> None:
    """The old race: the index stage bumps the epoch after its upsert, a search under the
    new epoch reads a stale index, and the result without the new post is cached under
    the new epoch until the TTL. With the write fence the search sees the rows."""
    index, cache = BoundedStaleIndex(), MemorySearchCache(prefix="t", ttl_s=300)
    index.ensure_ready(embedder.dim)
    stage = IndexStage(
        index=index,
        epoch=CacheEpoch(cache),
        publisher=RecordingPublisher(),
        topics=KafkaSettings(),
        metrics=WorkerMetrics(),
    )
    old = [_record(f"old{i}", f"quiet garden number {i}", embedder) for i in range(3)]
    asyncio.run(stage.handle_batch(old))
    index.settle()
    app = create_app(
        settings, embedder=embedder, index=index, cache=cache, live=LiveServices.memory()
    )
    body = {"text": "volcano eruption lava", "top_k": 3}
    with TestClient(app) as client:
        client.post("/v1/search", json=body)  # cached under the old epoch
        report = asyncio.run(
            stage.handle_batch([_record("hot", "volcano eruption lava", embedder)])
        )
        assert report.epoch == 2
        first = client.post("/v1/search", json=body).json()  # inside the staleness window
        index.settle()
        again = client.post("/v1/search", json=body).json()
    stage.close()
    assert first["epoch"] == 2 and first["results"][0]["id"] == "hot"
    assert again["cached"] is True and again["results"][0]["id"] == "hot"


def test_every_search_answer_carries_freshness(client: TestClient) -> None:
    for _ in range(2):  # uncached, then cached: freshness is never cached
        r = client.post("/v1/search", json={"text": "cats", "top_k": 2}).json()
        fresh = r["freshness"]
        assert set(fresh) >= {"indexed_through", "index_lag_s", "consumer_lag"}
        assert {s["stage"] for s in fresh["consumer_lag"]} == {"normalize", "embed", "index"}
        assert all(s["lag"] is None and s["reason"] for s in fresh["consumer_lag"])


class FakeThumbs:
    def __init__(self, items: list[Thumbnail]) -> None:
        self.items = {(t.post_id, t.item, t.moment): t.jpeg for t in items}

    async def get(self, post_id: str, item: int, moment: int | None = None) -> bytes | None:
        return self.items.get((post_id, item, moment))

    async def existing(self, wanted: Any) -> set[Any]:
        return {w for w in wanted if w in self.items}


def _app_with_thumbs(
    settings: Settings, embedder: HashingEmbedder, index: InMemoryIndex, jpeg: bytes
) -> Any:
    live = LiveServices.memory()
    live.thumbnails = FakeThumbs(  # type: ignore[assignment]
        [Thumbnail("cars1", 1, None, jpeg), Thumbnail("a/b", 1, 2, jpeg)]
    )
    return create_app(
        settings, embedder=embedder, index=index, cache=MemorySearchCache(), live=live
    )


def test_thumbnails_are_served_and_linked_from_hits(
    settings: Settings, embedder: HashingEmbedder, index: InMemoryIndex, make_png: Any
) -> None:
    jpeg = make_png((10, 200, 10))
    with TestClient(_app_with_thumbs(settings, embedder, index, jpeg)) as client:
        r = client.get("/v1/posts/cars1/media/1")
        assert r.status_code == 200 and r.content == jpeg
        assert r.headers["content-type"] == "image/jpeg"
        assert client.get("/v1/posts/a/b/media/1?moment=2").content == jpeg  # ids with "/"
        assert client.get("/v1/posts/cars1/media/2").status_code == 404
        assert client.get("/v1/posts/cars1/media/0").status_code == 422
        assert client.get("/v1/posts/cars1/media/1?moment=99").status_code == 422
        hits = client.post("/v1/search", json={"text": "red sports car", "top_k": 3}).json()
        by_id = {h["id"]: h["thumbnail"] for h in hits["results"]}
        assert by_id["cars1"] == "/v1/posts/cars1/media/1"  # a text hit shows item 1
        assert all(v is None for k, v in by_id.items() if k != "cars1")


def test_stats_describe_the_pipeline_and_optional_features(
    settings: Settings, embedder: HashingEmbedder, index: InMemoryIndex
) -> None:
    settings.trends.enabled = False  # CROSSFEED_TRENDS=0: no /v1/trends routes
    app = create_app(
        settings,
        embedder=embedder,
        index=index,
        cache=MemorySearchCache(),
        live=LiveServices.memory(),
    )
    with TestClient(app) as client:
        s = client.get("/v1/stats").json()
        assert s["model_version"] == embedder.version
        assert [st["stage"] for st in s["stages"]] == ["normalize", "embed", "index"]
        assert all(len(st["series"]) == s["window_s"] for st in s["stages"])
        assert s["collections"] == [
            {"name": settings.milvus.collection, "rows": index.count(), "serving": True}
        ]
        assert set(s["engines"]) == {"kafka", "milvus", "redis"}
        assert s["features"] == []  # no /v1/trends here: the page hides its trends panel

    @app.get("/v1/trends")
    def trends() -> dict[str, list[str]]:
        return {"trends": []}

    with TestClient(app) as client:
        assert client.get("/v1/stats").json()["features"] == ["trends"]
        with client.stream("GET", "/v1/stats/stream?every_s=0.5") as r:
            lines = []
            for line in r.iter_lines():
                lines.append(line)
                if line.startswith("data:"):
                    break
        assert "event: stats" in lines


def test_the_dashboard_is_served_offline(client: TestClient) -> None:
    page = client.get("/dashboard")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    for asset in ("/static/dashboard.js", "/static/dashboard.css"):
        r = client.get(asset)
        text = r.text.replace('"http://www.w3.org/2000/svg"', "")  # a namespace, not a fetch
        assert r.status_code == 200 and "http:" not in text and "https:" not in text
    assert client.get("/", follow_redirects=False).headers["location"] == "/dashboard"
