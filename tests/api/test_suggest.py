"""POST /v1/suggest-tags over the hashing embedder and the in-memory index."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from crossfeed.api.app import create_app
from crossfeed.api.cache import MemorySearchCache
from crossfeed.api.metrics import ApiMetrics
from crossfeed.core.settings import Settings
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.indexer.base import IndexRow
from crossfeed.indexer.memory import InMemoryIndex

RED, GREEN, BLUE = (220, 20, 20), (20, 200, 30), (30, 60, 230)


def _jpeg(color: tuple[int, int, int], size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _video(color: tuple[int, int, int], frames: int = 6) -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=3)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast"}
        for _ in range(frames):
            arr = np.zeros((32, 32, 3), np.uint8)
            arr[:] = color
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


@pytest.fixture
def tagged_index(embedder: HashingEmbedder) -> InMemoryIndex:
    """Red pictures tagged "red car", green ones "lawn"; every row carries its post's tags."""
    index = InMemoryIndex()
    index.ensure_ready(embedder.dim)
    rows = []
    posts = [
        ("red1", RED, ("red car", "cars")),
        ("red2", (200, 30, 25), ("red car",)),
        ("green1", GREEN, ("lawn", "garden")),
        ("green2", (25, 190, 40), ("lawn",)),
        ("blue1", BLUE, ("sky",)),
    ]
    for post, color, tags in posts:
        image = Image.open(io.BytesIO(_jpeg(color)))
        rows.append(
            IndexRow(
                row_id=f"{post}:image:1",
                post_id=post,
                item=1,
                modality="image",
                vector=embedder.embed_images([image])[0].tolist(),
                created_at_ms=0,
                author="a",
                text="",
                tags=tags,
                lang="en",
                model_version=embedder.version,
                media_ref="",
            )
        )
    index.upsert(rows)
    return index


@pytest.fixture
def suggest_client(
    settings: Settings, embedder: HashingEmbedder, tagged_index: InMemoryIndex
) -> Iterator[TestClient]:
    app = create_app(
        settings,
        embedder=embedder,
        index=tagged_index,
        cache=MemorySearchCache(prefix="t", ttl_s=60),
        metrics=ApiMetrics(),
    )
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_image_upload_gets_the_tags_of_similar_pictures(suggest_client: TestClient) -> None:
    r = suggest_client.post(
        "/v1/suggest-tags",
        files={"file": ("x.jpg", _jpeg((210, 25, 20)), "image/jpeg")},
        data={"top_k": "2", "neighbours": "2"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == "image" and body["used_posterior"] is False
    assert [t["tag"] for t in body["tags"]] == ["red car", "cars"]
    assert body["tags"][0]["support"] == 2 and 0 < body["tags"][0]["score"] <= 1
    assert {n["post_id"] for n in body["neighbours"]} == {"red1", "red2"}


def test_video_upload_is_detected_and_pooled(suggest_client: TestClient) -> None:
    r = suggest_client.post(
        "/v1/suggest-tags",
        files={"file": ("v.mp4", _video(GREEN), "video/mp4")},
        data={"neighbours": "2"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == "video"
    assert body["tags"][0]["tag"] == "lawn"


def test_post_id_uses_its_stored_vector_and_never_votes_for_itself(
    suggest_client: TestClient,
) -> None:
    r = suggest_client.post("/v1/suggest-tags", json={"post_id": "green1", "neighbours": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == "post"
    assert [n["post_id"] for n in body["neighbours"]] == ["green2"]
    assert [t["tag"] for t in body["tags"]] == ["lawn"]


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"json": {"post_id": "missing"}}, 404),
        ({"json": {"post_id": "red1", "top_k": 0}}, 422),
        ({"json": {"post_id": "red1", "extra": 1}}, 422),
        ({"json": {"post_id": "bad\nid"}}, 422),
        ({"content": b"not json", "headers": {"content-type": "application/json"}}, 422),
        ({"content": b"x", "headers": {"content-type": "text/plain"}}, 415),
        ({"files": {"file": ("x.jpg", b"not an image", "image/jpeg")}}, 422),
        ({"files": {"file": ("x.jpg", _jpeg(RED), "image/jpeg")}, "data": {"top_k": "x"}}, 422),
        ({"files": {"file": ("x.jpg", _jpeg(RED), "image/jpeg")}, "data": {"k": "1"}}, 422),
        ({"files": {"file": ("x.jpg", b"\0" * 300_000, "image/jpeg")}}, 413),
    ],
)
def test_bad_requests_get_clear_errors(
    suggest_client: TestClient, kwargs: dict[str, object], status: int
) -> None:
    r = suggest_client.post("/v1/suggest-tags", **kwargs)  # type: ignore[arg-type]
    assert r.status_code == status, r.text
    assert "error" in r.json()
