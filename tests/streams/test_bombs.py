"""The stream's decode path refuses decompression bombs with the configured limits, before
decoding: each bomb post is dead-lettered with the reason, the rest of the batch flows."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from PIL import ImageFile, WebPImagePlugin

from crossfeed.core.schema import CleanPost, DeadLetter, Post, VectorRecord
from crossfeed.core.settings import KafkaSettings, Settings
from crossfeed.encoders import bombs
from crossfeed.encoders import media as encoder_media
from crossfeed.encoders.exceptions import MediaDecodeError
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.streams.embed import EmbedStage
from crossfeed.streams.media import (
    DecodeLimits,
    MediaFetcher,
    MediaPolicy,
    decode_image_bytes,
    decode_video_bytes,
)
from crossfeed.streams.metrics import WorkerMetrics
from crossfeed.streams.testing import RecordingPublisher

TOPICS = KafkaSettings()


@pytest.fixture
def limited(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings read from the environment, with small limits."""
    monkeypatch.setenv("CROSSFEED_MAX_IMAGE_PIXELS", "1000000")
    monkeypatch.setenv("CROSSFEED_MAX_MEDIA_FRAMES", "100")
    return Settings()


@pytest.fixture
def watched_decoders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every decode: images (Pillow's load) by their size, videos (the frame loop)."""
    calls: list[str] = []
    image_load, webp_load, video = (
        ImageFile.ImageFile.load,
        WebPImagePlugin.WebPImageFile.load,
        encoder_media._decode,
    )

    def track(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            size = getattr(args[0], "size", None) if name != "video" else None
            calls.append(f"{name} {size[0]}x{size[1]}" if size else name)
            return original(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(ImageFile.ImageFile, "load", track("image", image_load))
    monkeypatch.setattr(WebPImagePlugin.WebPImageFile, "load", track("webp", webp_load))
    monkeypatch.setattr(encoder_media, "_decode", track("video", video))
    return calls


def test_limits_come_from_the_settings(limited: Settings) -> None:
    limits = DecodeLimits.from_settings(limited)
    assert (limits.max_pixels, limits.max_total_frames) == (1_000_000, 100)


@pytest.mark.parametrize(
    ("kind", "build", "reason"),
    [
        ("image", lambda: bombs.png_bomb(2_000, 2_000, complete=False), "pixel limit"),
        ("image", lambda: bombs.gif_bomb(500), "frame limit"),
        ("image", lambda: bombs.webp_bomb(300), "frame limit"),
        ("video", lambda: bombs.gif_bomb(500), "frame limit"),
        ("video", lambda: bombs.h264_bomb(32, 32, frames=150), "frame limit"),
        ("video", lambda: bombs.h264_bomb(2048, 2048, frames=1), "pixel limit"),
    ],
)
def test_stream_decoding_refuses_bombs_before_decoding(
    limited: Settings,
    watched_decoders: list[str],
    kind: str,
    build: Callable[[], bytes],
    reason: str,
) -> None:
    decode = decode_image_bytes if kind == "image" else decode_video_bytes
    with pytest.raises(MediaDecodeError, match=reason):
        decode(build(), DecodeLimits.from_settings(limited))  # type: ignore[operator]
    assert watched_decoders == []


def _clean(post_id: str, kind: str, data: bytes) -> bytes:
    item = {"kind": kind, "data_base64": base64.b64encode(data).decode()}
    post = Post.model_validate(
        {
            "id": post_id,
            "source": "test",
            "author": "a",
            "created_at": "2024-05-01T12:00:00Z",
            "text": f"post {post_id}",
            "media": [item],
        }
    )
    clean = CleanPost(
        post=post,
        clean_text=post.text,
        hashtags=[],
        content_hash=post_id,
        received_at=datetime.now(UTC),
    )
    return clean.model_dump_json().encode()


async def test_bomb_posts_are_dead_lettered_and_the_batch_flows(
    limited: Settings, watched_decoders: list[str], png: Callable[..., bytes]
) -> None:
    pub = RecordingPublisher()
    stage = EmbedStage(
        embedder=HashingEmbedder(dim=16),
        fetcher=MediaFetcher(MediaPolicy.from_settings(limited)),
        limits=DecodeLimits.from_settings(limited),
        publisher=pub,
        topics=TOPICS,
        metrics=WorkerMetrics(),
    )
    values = [
        _clean("good", "image", png()),
        _clean("png-bomb", "image", bombs.png_bomb(5_000, 5_000, complete=False)),
        _clean("gif-frames", "image", bombs.gif_bomb(1_000)),
        _clean("video-frames", "video", bombs.h264_bomb(32, 32, frames=150)),
        _clean("video-pixels", "video", bombs.h264_bomb(2048, 2048, frames=1)),
    ]
    try:
        report = await stage.handle_batch(values)
    finally:
        stage.close()
    letters = {
        letter.post_id: letter
        for letter in (
            DeadLetter.model_validate_json(v) for _, v in pub.on(TOPICS.topic_deadletter)
        )
    }
    assert report.deadlettered == 4
    assert set(letters) == {"png-bomb", "gif-frames", "video-frames", "video-pixels"}
    assert all(letter.stage == "decode" for letter in letters.values())
    assert "pixel limit" in letters["png-bomb"].reason
    assert "frame limit" in letters["gif-frames"].reason
    assert "frame limit" in letters["video-frames"].reason
    assert "pixel limit" in letters["video-pixels"].reason
    vectors = [VectorRecord.model_validate_json(v) for _, v in pub.on(TOPICS.topic_vectors)]
    assert {(v.post_id, v.modality) for v in vectors} == {("good", "text"), ("good", "image")}
    assert set(watched_decoders) == {"image 16x16"}  # the good picture, and nothing else
