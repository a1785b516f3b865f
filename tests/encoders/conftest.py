"""Shared fixtures: media factories and one real embedder per test session."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crossfeed.core.settings import EncoderSettings


def _make_video(
    seconds: float = 3.0,
    fps: int = 10,
    size: tuple[int, int] = (64, 48),
    gop: int = 10,
    container: str = "mp4",
) -> bytes:
    """An H.264 clip whose frame brightness encodes its index (so frames differ)."""
    import av

    buf = io.BytesIO()
    width, height = size
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.options = {"preset": "ultrafast", "bf": "0"}
        n = round(seconds * fps)
        for i in range(n):
            arr = np.zeros((height, width, 3), np.uint8)
            arr[..., 0] = int(255 * i / max(n - 1, 1))
            arr[: height // 2, : width // 2, 1] = 200
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def make_video() -> Callable[..., bytes]:
    return _make_video


@pytest.fixture(scope="session")
def png_bytes() -> Callable[[Image.Image], bytes]:
    return _png_bytes


@pytest.fixture(scope="session")
def encoder_settings(tmp_path_factory: pytest.TempPathFactory) -> EncoderSettings:
    return EncoderSettings(
        device="cpu", models_dir=tmp_path_factory.mktemp("models"), video_max_frames=8
    )


@pytest.fixture(scope="session")
def embedder(encoder_settings: EncoderSettings):  # -> SharedSpaceEmbedder
    """The real towers, loaded once per session (heads: the built-in fallback)."""
    from crossfeed.encoders.model import SharedSpaceEmbedder

    assert encoder_settings.models_dir is not None
    return SharedSpaceEmbedder(encoder_settings, Path(encoder_settings.models_dir))
