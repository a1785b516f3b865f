"""Shared fixtures: the app over fakes (hashing embedder, in-memory index and cache)."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from crossfeed.api.app import create_app
from crossfeed.api.cache import MemorySearchCache
from crossfeed.api.live import LiveServices
from crossfeed.api.metrics import ApiMetrics
from crossfeed.core.settings import Settings
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.indexer.base import IndexRow
from crossfeed.indexer.memory import InMemoryIndex
from crossfeed.live.memory import MemorySubscriptions

DIM = 32
T0 = datetime(2024, 5, 1, tzinfo=UTC)


def ms(day: int) -> int:
    """Epoch ms of 2024-05-<day> 00:00 UTC."""
    return int(T0.replace(day=day).timestamp() * 1000)


def png(color: tuple[int, int, int], size: int = 32, fmt: str = "JPEG") -> bytes:
    """A flat-colour image, JPEG by default (``fmt="PNG"`` for PNG)."""
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format=fmt, quality=95)
    return buf.getvalue()


@pytest.fixture
def make_png():  # type: ignore[no-untyped-def]
    """``make_png(color, fmt=...)`` -> image bytes (test modules cannot import conftest)."""
    return png


@pytest.fixture
def free_port() -> Iterator[int]:
    """A port nobody listens on (bound then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield port


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A port that accepts TCP connections, standing in for a broker."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


@pytest.fixture
def embedder() -> HashingEmbedder:
    return HashingEmbedder(dim=DIM)


@pytest.fixture
def index(embedder: HashingEmbedder) -> InMemoryIndex:
    idx = InMemoryIndex()
    idx.ensure_ready(DIM)

    def text_row(post: str, text: str, day: int, tags: tuple[str, ...], lang: str) -> IndexRow:
        return IndexRow(
            row_id=f"{post}:text:0",
            post_id=post,
            item=0,
            modality="text",
            vector=embedder.embed_texts([text])[0].tolist(),
            created_at_ms=ms(day),
            author=f"author-{post}",
            text=text,
            tags=tags,
            lang=lang,
            model_version=embedder.version,
            media_ref="",
        )

    def image_row(post: str, item: int, color: tuple[int, int, int], day: int) -> IndexRow:
        image = Image.open(io.BytesIO(png(color)))
        return IndexRow(
            row_id=f"{post}:image:{item}",
            post_id=post,
            item=item,
            modality="image",
            vector=embedder.embed_images([image])[0].tolist(),
            created_at_ms=ms(day),
            author=f"author-{post}",
            text="",
            tags=("photo",),
            lang="en",
            model_version=embedder.version,
            media_ref=f"https://example.org/{post}/{item}.png",
        )

    idx.upsert(
        [
            text_row("cats1", "cute cats sleeping on a sofa", 2, ("cats", "pets"), "en"),
            text_row("cats3", "cute cats sleeping on a big sofa", 1, ("pets",), "en"),
            text_row("cats2", "two cats playing with yarn", 5, ("cats",), "en"),
            text_row(
                "dogs1", "a dog running on the beach", 3, ("dogs", "pets", "sunset beach"), "en"
            ),
            text_row("chats", "des chats mignons qui dorment", 4, ("cats",), "fr"),
            text_row("cars1", "red sports car on a highway", 6, ("cars",), "en"),
            image_row("cars1", 1, (220, 20, 20), 6),
            image_row("sky1", 1, (30, 60, 230), 7),
            image_row("grass1", 1, (20, 200, 30), 8),
            image_row("grass1", 2, (25, 190, 40), 8),
        ]
    )
    return idx


@pytest.fixture
def cache() -> MemorySearchCache:
    return MemorySearchCache(prefix="test", ttl_s=60)


@pytest.fixture
def settings(listening_port: int) -> Settings:
    s = Settings()
    s.kafka.bootstrap = f"127.0.0.1:{listening_port}"
    s.api.max_upload_bytes = 200_000
    s.api.max_top_k = 20
    s.live.lag_refresh_s = 0  # no broker here: never try to measure consumer lag
    s.live.sse_heartbeat_s = 0.3
    return s


@pytest.fixture
def subscriptions() -> MemorySubscriptions:
    return MemorySubscriptions(events_maxlen=1000)


@pytest.fixture
def client(
    settings: Settings,
    embedder: HashingEmbedder,
    index: InMemoryIndex,
    cache: MemorySearchCache,
    subscriptions: MemorySubscriptions,
) -> Iterator[TestClient]:
    app = create_app(
        settings,
        embedder=embedder,
        index=index,
        cache=cache,
        metrics=ApiMetrics(),
        live=LiveServices.memory(subscriptions),
    )
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
