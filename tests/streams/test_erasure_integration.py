"""Erasure end to end on the real engines: a running worker, the API in process.

A post erased through ``DELETE /v1/posts/{id}`` is found by no query (its text, its own
image, its id) and ``GET /v1/posts/{id}`` answers 404 as soon as the call returns; the
stream writes its tombstone to ``posts.clean``; a later ``crossfeed reindex`` does not bring
it back; and a post erased before it arrived never appears.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crossfeed.core.kafka import KafkaConnection
from crossfeed.core.settings import Settings
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.indexer.milvus import MilvusIndex
from crossfeed.ops.data.produce import produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DIM = 32


@pytest.fixture
def deployment(
    worker_deployment: Callable[..., contextlib.AbstractContextManager[dict[str, str]]],
) -> Iterator[dict[str, str]]:
    with worker_deployment("erase") as env:
        yield env


def _post(post_id: str, text: str, image: bytes | None = None) -> dict[str, Any]:
    post: dict[str, Any] = {
        "id": post_id,
        "source": "itest",
        "author": "u1",
        "created_at": "2026-01-01T00:00:00Z",
        "text": text,
    }
    if image is not None:
        post["media"] = [{"kind": "image", "data_base64": base64.b64encode(image).decode()}]
    return post


def _wait(check: Callable[[], bool], timeout_s: float, what: str, log: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what}\n{Path(log).read_text()[-3000:]}"
        time.sleep(0.5)


def _clean_tombstone(settings: Settings, post_id: str) -> bool:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        settings.kafka.topic_clean,
        group_id=None,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
        **KafkaConnection(settings.kafka).kafka_python(),
    )
    try:
        return any(m.key == post_id.encode() and m.value is None for m in consumer)
    finally:
        consumer.close()


def test_an_erased_post_is_found_by_no_query_and_stays_out(
    deployment: dict[str, str], png: Callable[..., bytes]
) -> None:
    from crossfeed.api.app import create_app
    from crossfeed.streams.reindex import run_reindex

    settings = Settings()
    image = png((240, 20, 20))
    posts = [
        _post("keep", "a calm blue lake at dawn"),
        _post("gone", "a bright red fire truck racing", image),
    ]
    produce([json.dumps(p).encode() for p in posts], settings.kafka, progress=False)
    index = MilvusIndex(settings.milvus, consistency_level="Strong")
    _wait(lambda: index.count() >= 3, 90, "posts were not indexed", deployment["log"])

    app = create_app(settings, embedder=HashingEmbedder(dim=DIM))
    with TestClient(app) as api:
        by_text = {"text": "a bright red fire truck racing", "top_k": 5}
        assert api.post("/v1/search", json=by_text).json()["results"][0]["id"] == "gone"
        assert api.post("/v1/search", json=by_text).json()["cached"] is True

        started = time.monotonic()
        erased = api.delete("/v1/posts/gone")
        took = time.monotonic() - started
        assert erased.status_code == 200, erased.text
        assert erased.json()["rows_removed"] == 2  # its text and its image
        print(f"\n[erasure] DELETE answered in {took:.2f} s")

        # Right away, by every kind of query:
        ids = [h["id"] for h in api.post("/v1/search", json=by_text).json()["results"]]
        assert "gone" not in ids and "keep" in ids
        files = {"file": ("g.png", image, "image/png")}
        ids = [h["id"] for h in api.post("/v1/search", files=files).json()["results"]]
        assert "gone" not in ids
        assert api.post("/v1/search", json={"post_id": "gone"}).status_code == 404
        assert api.get("/v1/posts/gone").status_code == 404

        # The stream got the tombstone: posts.clean carries one for compaction.
        _wait(
            lambda: _clean_tombstone(settings, "gone"),
            60,
            "no tombstone on posts.clean",
            deployment["log"],
        )

        # Erased before it arrives: it must never appear.
        assert api.delete("/v1/posts/early").status_code == 200
        late = [_post("early", "an early post erased in advance"), _post("marker", "a marker")]
        produce([json.dumps(p).encode() for p in late], settings.kafka, progress=False)
        _wait(lambda: bool(index.get_post("marker")), 60, "marker not indexed", deployment["log"])
        time.sleep(2.0)
        assert index.get_post("early") == [] and api.get("/v1/posts/early").status_code == 404

    # A back-fill of another version re-reads posts.clean: the erased posts stay out.
    report = run_reindex(
        settings,
        "hash-v9",
        embedder=HashingEmbedder(dim=DIM, version="hash-v9"),
        idle_s=3.0,
        join_timeout_s=30.0,
    )
    target = MilvusIndex(
        settings.milvus.model_copy(update={"collection": report.collection}),
        consistency_level="Strong",
    )
    try:
        target.ensure_ready(DIM)
        assert target.get_post("keep") and target.get_post("marker")
        assert target.get_post("gone") == [] and target.get_post("early") == []
    finally:
        target.close()
        index.close()
