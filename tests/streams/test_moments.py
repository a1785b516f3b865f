"""Video moments through the embed stage, the index and the API (fakes only)."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from crossfeed.api.app import create_app
from crossfeed.api.cache import MemorySearchCache
from crossfeed.api.metrics import ApiMetrics
from crossfeed.core.schema import CleanPost, Post
from crossfeed.core.settings import KafkaSettings, Settings
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.indexer.memory import InMemoryIndex
from crossfeed.streams.index import to_index_row

TOPICS = KafkaSettings()
RED, BLUE, GREEN = (220, 20, 20), (20, 20, 220), (20, 200, 20)


def _clean(post_id: str, video: bytes) -> bytes:
    post = Post(
        id=post_id,
        source="test",
        author="alice",
        created_at=datetime(2024, 5, 1, tzinfo=UTC),
        text="my trip",
        media=[{"kind": "video", "data_base64": base64.b64encode(video).decode()}],  # type: ignore[list-item]
    )
    clean = CleanPost(
        post=post,
        clean_text=post.text,
        hashtags=[],
        content_hash=post_id,
        received_at=datetime.now(UTC),
    )
    return clean.model_dump_json().encode()


def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def embedder() -> HashingEmbedder:
    return HashingEmbedder(dim=16)


Maker = Callable[..., bytes]


async def test_a_long_video_gets_one_row_per_moment(
    embedder: HashingEmbedder, segmented_mp4: Maker, embed_batch: Callable[..., Any]
) -> None:
    video = segmented_mp4([RED, BLUE, GREEN], seconds_each=4.0)
    records = await embed_batch(embedder, [_clean("trip", video)], moment_s=4.0)
    videos = [r for r in records if r.modality == "video"]
    assert [r.row_id for r in videos] == [
        "trip:video:1",
        "trip:video:1:m0",
        "trip:video:1:m1",
        "trip:video:1:m2",
    ]
    whole, *moments = videos
    assert whole.moment is None and whole.start_s is None
    assert [(m.start_s, m.end_s) for m in moments] == [(0.0, 4.0), (4.0, 8.0), (8.0, 12.0)]
    colour_vectors = embedder.embed_images(
        [Image.new("RGB", (8, 8), c) for c in (RED, BLUE, GREEN)]
    )
    for moment, expected in zip(moments, colour_vectors, strict=True):
        assert float(np.dot(moment.vector, expected)) > 0.99  # each moment is its own scene
    assert float(np.dot(whole.vector, colour_vectors[1])) < 0.9  # the pool mixes them


async def test_short_video_or_moments_off_gives_the_whole_video_only(
    embedder: HashingEmbedder, segmented_mp4: Maker, mp4: Maker, embed_batch: Callable[..., Any]
) -> None:
    short = await embed_batch(embedder, [_clean("short", mp4())], moment_s=4.0)
    assert [r.row_id for r in short if r.modality == "video"] == ["short:video:1"]
    video = segmented_mp4([RED, BLUE], seconds_each=4.0)
    off = await embed_batch(embedder, [_clean("off", video)], moment_s=0.0)
    assert [r.row_id for r in off if r.modality == "video"] == ["off:video:1"]


async def test_a_query_finds_the_moment_where_it_matches(
    embedder: HashingEmbedder, segmented_mp4: Maker, embed_batch: Callable[..., Any]
) -> None:
    """An image of the blue scene is matched to the video's second moment, 4-8 s."""
    video = segmented_mp4([RED, BLUE, GREEN], seconds_each=4.0)
    records = await embed_batch(embedder, [_clean("trip", video)], moment_s=4.0)
    index = InMemoryIndex(dim=16)
    index.upsert([to_index_row(r) for r in records])
    settings = Settings()
    app = create_app(
        settings,
        embedder=embedder,
        index=index,
        cache=MemorySearchCache(prefix="t", ttl_s=60),
        metrics=ApiMetrics(),
    )
    with TestClient(app) as client:
        r = client.post("/v1/search", files={"file": ("b.png", _png(BLUE), "image/png")})
        assert r.status_code == 200, r.text
        [hit] = r.json()["results"]
        assert hit["id"] == "trip" and hit["modality"] == "video"
        assert hit["moment"] == {"index": 1, "start_s": 4.0, "end_s": 8.0}
        post = client.get("/v1/posts/trip").json()
        spans = [i["moment"] for i in post["items"] if i["modality"] == "video"]
        assert spans[0] is None and [s["index"] for s in spans[1:]] == [0, 1, 2]
        # A post query stands for the post by its whole items, never by one moment.
        r = client.post("/v1/search", json={"post_id": "trip", "top_k": 1})
        assert r.status_code == 200, r.text
