"""Fixtures: the crossfeed API over the in-memory fakes on a loopback port.

``api_url`` is the API (hashing embedder, in-memory index and cache) with a few posts
indexed, served by uvicorn through the ``serve`` fixture (tests/conftest.py). No mock
of httpx anywhere: every request crosses a socket.
"""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from PIL import Image

from crossfeed.api.app import create_app
from crossfeed.api.cache import MemorySearchCache
from crossfeed.api.metrics import ApiMetrics
from crossfeed.core.settings import Settings
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.indexer.base import Hit, IndexRow, SearchFilter
from crossfeed.indexer.exceptions import IndexUnavailableError
from crossfeed.indexer.memory import InMemoryIndex

DIM = 32
T0 = int(datetime(2024, 5, 1, tzinfo=UTC).timestamp() * 1000)
DAY = 86_400_000


def picture(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buf, format="PNG")
    return buf.getvalue()


class FlakyIndex(InMemoryIndex):
    """Searches fail (engine unavailable -> 503) while ``failures`` > 0."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0
        self.searches = 0
        self._flaky_lock = threading.Lock()

    def search(self, vector: Any, top_k: int, flt: SearchFilter) -> list[Hit]:
        with self._flaky_lock:
            self.searches += 1
            if self.failures > 0:
                self.failures -= 1
                raise IndexUnavailableError("milvus is restarting")
        return super().search(vector, top_k, flt)


@pytest.fixture
def embedder() -> HashingEmbedder:
    return HashingEmbedder(dim=DIM)


@pytest.fixture
def index(embedder: HashingEmbedder) -> FlakyIndex:
    idx = FlakyIndex()
    idx.ensure_ready(DIM)
    texts = {
        "cats1": "cute cats sleeping on a sofa",
        "cats2": "two cats playing with yarn",
        "dogs1": "a dog running on the beach",
        "cars1": "red sports car on a highway",
        "a/b?c#d": "an id with url characters in it",
    }
    rows = [
        IndexRow(
            row_id=f"{pid}:text:0",
            post_id=pid,
            item=0,
            modality="text",
            vector=embedder.embed_texts([text])[0].tolist(),
            created_at_ms=T0 + i * DAY,
            author=f"@author{i}",
            text=text,
            tags=("pets",) if "cat" in text or "dog" in text else ("cars",),
            lang="en",
            model_version=embedder.version,
            media_ref="",
            source="bluesky" if i % 2 else "mastodon",
        )
        for i, (pid, text) in enumerate(texts.items())
    ]
    for i, color in enumerate(((220, 20, 20), (30, 60, 230), (20, 200, 30))):
        image = Image.open(io.BytesIO(picture(color)))
        rows.append(
            IndexRow(
                row_id=f"img{i}:image:1",
                post_id=f"img{i}",
                item=1,
                modality="image",
                vector=embedder.embed_images([image])[0].tolist(),
                created_at_ms=T0,
                author="@painter",
                text="",
                tags=("art",),
                lang="en",
                model_version=embedder.version,
                media_ref=f"https://example.org/{i}.png",
                source="clipart",
            )
        )
    idx.upsert(rows)
    return idx


@pytest.fixture
def cache() -> MemorySearchCache:
    return MemorySearchCache(prefix="client-test", ttl_s=60)


@pytest.fixture
def api_settings() -> Iterator[Settings]:
    with socket.socket() as broker:  # something that accepts TCP, standing in for Kafka
        broker.bind(("127.0.0.1", 0))
        broker.listen(8)
        s = Settings()
        s.kafka.bootstrap = f"127.0.0.1:{broker.getsockname()[1]}"
        s.api.max_top_k = 50
        # The API answers an engine outage with 503 at once: the client's retries are tested.
        s.api.retry_budget_s = 0.0
        yield s


@pytest.fixture
def api_url(
    serve: Callable[[Any], str],
    api_settings: Settings,
    embedder: HashingEmbedder,
    index: FlakyIndex,
    cache: MemorySearchCache,
) -> str:
    app = create_app(
        api_settings, embedder=embedder, index=index, cache=cache, metrics=ApiMetrics()
    )
    return serve(app)


@pytest.fixture
def make_picture() -> Callable[[tuple[int, int, int]], bytes]:
    """``make_picture(rgb)`` -> PNG bytes of a flat 32x32 picture (modules cannot import
    conftest)."""
    return picture
