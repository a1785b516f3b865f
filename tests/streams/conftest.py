"""Shared builders for the stream tests: posts, PNG images, tiny videos."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import pytest
from PIL import Image


def make_png(color: tuple[int, int, int] = (200, 30, 30), size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def make_mp4(color: tuple[int, int, int] = (20, 160, 40), frames: int = 6, size: int = 32) -> bytes:
    """A tiny H.264 MP4 (or MPEG-4 Part 2 where no H.264 encoder is built in)."""
    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, rate=5)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, 5)
        for i in range(frames):
            arr = np.full((size, size, 3), color, dtype=np.uint8)
            arr[: (i % size) + 1, :, :] = 255 - np.array(color, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def post_dict(post_id: str = "p1", **overrides: Any) -> dict[str, Any]:
    post: dict[str, Any] = {
        "id": post_id,
        "source": "test",
        "author": "alice",
        "created_at": "2024-05-01T12:00:00Z",
        "text": f"a sunny day at the beach number {post_id}",
        "tags": [],
        "media": [],
    }
    post.update(overrides)
    return post


@pytest.fixture
def png() -> Callable[..., bytes]:
    return make_png


@pytest.fixture
def mp4() -> Callable[..., bytes]:
    return make_mp4


@pytest.fixture
def raw_post() -> Callable[..., bytes]:
    """``raw_post("id", text=..., media=[...])`` -> the JSON bytes of a posts.raw message."""

    def build(post_id: str = "p1", **overrides: Any) -> bytes:
        return json.dumps(post_dict(post_id, **overrides)).encode()

    return build


@pytest.fixture
def image_media() -> Callable[..., dict[str, Any]]:
    def build(data: bytes | None = None) -> dict[str, Any]:
        return {"kind": "image", "data_base64": b64(data if data is not None else make_png())}

    return build


@pytest.fixture
def video_media() -> Callable[..., dict[str, Any]]:
    def build(data: bytes | None = None) -> dict[str, Any]:
        return {"kind": "video", "data_base64": b64(data if data is not None else make_mp4())}

    return build
