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
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crossfeed.core.kafka import KafkaConnection
from crossfeed.core.settings import Settings
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.indexer.collections import default_collection
from crossfeed.indexer.milvus import MilvusIndex
from crossfeed.ops.data.produce import produce
from crossfeed.streams.topics import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DIM = 32
_WORKER = f"""
import logging
logging.basicConfig(level=logging.INFO)
from crossfeed.core.settings import Settings
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.streams.worker import run_worker
run_worker(Settings(), embedder=HashingEmbedder(dim={DIM}))
"""


@pytest.fixture
def deployment(
    engines: object, unique_name: Callable[[str], str], tmp_path: Path
) -> Iterator[dict[str, str]]:
    name = unique_name("erase")
    env = {
        "CROSSFEED_TOPIC_RAW": f"{name}.raw",
        "CROSSFEED_TOPIC_CLEAN": f"{name}.clean",
        "CROSSFEED_TOPIC_VECTORS": f"{name}.vectors",
        "CROSSFEED_TOPIC_DEADLETTER": f"{name}.deadletter",
        "CROSSFEED_PARTITIONS": "2",
        "CROSSFEED_KAFKA_SESSION_TIMEOUT": "6",
        "CROSSFEED_APP_ID": name,
        "CROSSFEED_COLLECTION": name,
        "CROSSFEED_REDIS_PREFIX": name,
        "CROSSFEED_STATE_DIR": str(tmp_path / "state"),
        "CROSSFEED_BATCH_WAIT": "0.2",
    }
    saved = dict(os.environ)
    os.environ.update(env)
    settings = Settings()
    ensure_topics(settings.kafka)
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER], env={**saved, **env}, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        yield {**env, "log": str(tmp_path / "worker.log")}
    finally:
        worker.kill()
        worker.wait()
        os.environ.clear()
        os.environ.update(saved)
        _cleanup(settings, name)


def _cleanup(settings: Settings, name: str) -> None:
    import redis
    from kafka import KafkaAdminClient

    with contextlib.suppress(Exception):
        admin = KafkaAdminClient(**KafkaConnection(settings.kafka).kafka_python())
        admin.delete_topics([f"{name}.{t}" for t in ("raw", "clean", "vectors", "deadletter")])
        admin.close()
    for collection in (name, default_collection(name, "hash-v9")):
        with contextlib.suppress(Exception):
            index = MilvusIndex(settings.milvus.model_copy(update={"collection": collection}))
            index.drop()
            index.close()
    client = redis.Redis.from_url(settings.redis.url.get_secret_value())
    keys = list(client.scan_iter(f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


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
