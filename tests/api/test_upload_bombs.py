"""Uploads to /v1/search and /v1/suggest-tags: decompression bombs are answered with a
422 that says which limit they broke, never a 500, and nothing decodes them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import ImageFile, WebPImagePlugin

from crossfeed.api.app import create_app
from crossfeed.api.cache import MemorySearchCache
from crossfeed.api.metrics import ApiMetrics
from crossfeed.core.settings import Settings
from crossfeed.encoders import bombs
from crossfeed.encoders import media as encoder_media
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.indexer.memory import InMemoryIndex


@pytest.fixture
def bomb_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app over fakes, limits from the environment, every decoder a tripwire."""
    monkeypatch.setenv("CROSSFEED_MAX_IMAGE_PIXELS", "1000000")
    monkeypatch.setenv("CROSSFEED_MAX_MEDIA_FRAMES", "100")

    def tripwire(*_: Any, **__: Any) -> None:
        raise AssertionError("a decoder was called")

    monkeypatch.setattr(ImageFile.ImageFile, "load", tripwire)
    monkeypatch.setattr(WebPImagePlugin.WebPImageFile, "load", tripwire)
    monkeypatch.setattr(encoder_media, "_decode", tripwire)
    index = InMemoryIndex()
    index.ensure_ready(16)
    app = create_app(
        Settings(),
        embedder=HashingEmbedder(dim=16),
        index=index,
        cache=MemorySearchCache(prefix="bombs", ttl_s=60),
        metrics=ApiMetrics(),
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


BOMBS: dict[str, tuple[Callable[[], bytes], str]] = {
    "png 100000x100000": (lambda: bombs.png_bomb(100_000, 100_000, complete=False), "bomb"),
    "png 2000x2000": (lambda: bombs.png_bomb(2_000, 2_000, complete=False), "pixel limit"),
    "jpeg 4000x4000": (lambda: bombs.jpeg_bomb(4_000, 4_000), "pixel limit"),
    "gif 500 frames": (lambda: bombs.gif_bomb(500), "frame limit"),
    "webp 300 frames": (lambda: bombs.webp_bomb(300), "frame limit"),
    "webp canvas": (lambda: bombs.webp_bomb(2, (2_000, 2_000)), "pixel limit"),
    "apng 10^9 frames": (lambda: bombs.apng_bomb(10**9), "frame limit"),
}
VIDEO_BOMBS: dict[str, tuple[Callable[[], bytes], str]] = {
    "mp4 150 frames": (lambda: bombs.h264_bomb(32, 32, frames=150), "frame limit"),
    "matroska 150 frames": (
        lambda: bombs.h264_bomb(32, 32, frames=150, container="matroska"),
        "frame limit",
    ),
    "mp4 2048x2048": (lambda: bombs.h264_bomb(2048, 2048, frames=1), "pixel limit"),
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_search_upload_bombs_are_422(bomb_client: TestClient, name: str) -> None:
    build, reason = BOMBS[name]
    r = bomb_client.post("/v1/search", files={"file": ("x", build(), "image/png")})
    assert r.status_code == 422, r.text
    assert reason in r.json()["error"]["message"]


@pytest.mark.parametrize("name", sorted(BOMBS) + sorted(VIDEO_BOMBS))
def test_suggest_upload_bombs_are_422(bomb_client: TestClient, name: str) -> None:
    build, reason = {**BOMBS, **VIDEO_BOMBS}[name]
    r = bomb_client.post("/v1/suggest-tags", files={"file": ("x", build(), "image/png")})
    assert r.status_code == 422, r.text
    assert reason in r.json()["error"]["message"]
