"""Shared builders for the stream tests: posts, PNG images, tiny videos, a worker process."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from PIL import Image


def make_png(color: tuple[int, int, int] = (200, 30, 30), size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def _encode_mp4(arrays: Iterable[Any], rate: int, size: int) -> bytes:
    """H.264 MP4 (or MPEG-4 Part 2 where no H.264 encoder is built in) of RGB arrays."""
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, rate=rate)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, rate)
        for arr in arrays:
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def make_mp4(color: tuple[int, int, int] = (20, 160, 40), frames: int = 6, size: int = 32) -> bytes:
    """A tiny 5 fps video of ``color`` with a growing stripe of its inverse."""
    import numpy as np

    def arrays() -> Iterator[Any]:
        for i in range(frames):
            arr = np.full((size, size, 3), color, dtype=np.uint8)
            arr[: (i % size) + 1, :, :] = 255 - np.array(color, dtype=np.uint8)
            yield arr

    return _encode_mp4(arrays(), 5, size)


def make_segmented_mp4(
    colors: list[tuple[int, int, int]], seconds_each: float = 3.0, rate: int = 5, size: int = 32
) -> bytes:
    """A video showing each colour in turn for ``seconds_each`` (flat frames)."""
    import numpy as np

    return _encode_mp4(
        (
            np.full((size, size, 3), color, dtype=np.uint8)
            for color in colors
            for _ in range(int(seconds_each * rate))
        ),
        rate,
        size,
    )


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


@pytest.fixture
def segmented_mp4() -> Callable[..., bytes]:
    return make_segmented_mp4


async def run_embed_stage(
    embedder: Any, values: list[bytes], *, metrics: Any = None, **stage_kwargs: Any
) -> list[Any]:
    """One batch through a real EmbedStage (default settings, recording publisher);
    returns the vector records it published."""
    from crossfeed.core.schema import VectorRecord
    from crossfeed.core.settings import KafkaSettings, Settings
    from crossfeed.streams.embed import EmbedStage
    from crossfeed.streams.media import DecodeLimits, MediaFetcher, MediaPolicy
    from crossfeed.streams.metrics import WorkerMetrics
    from crossfeed.streams.testing import RecordingPublisher

    settings, topics, pub = Settings(), KafkaSettings(), RecordingPublisher()
    stage = EmbedStage(
        embedder=embedder,
        fetcher=MediaFetcher(MediaPolicy.from_settings(settings)),
        limits=DecodeLimits.from_settings(settings),
        publisher=pub,
        topics=topics,
        metrics=metrics or WorkerMetrics(),
        **stage_kwargs,
    )
    try:
        await stage.handle_batch(values)
    finally:
        stage.close()
    return [VectorRecord.model_validate_json(v) for _, v in pub.on(topics.topic_vectors)]


@pytest.fixture
def embed_batch() -> Callable[..., Any]:
    """``await embed_batch(embedder, values, moment_s=..., suggester=...)`` -> vector records."""
    return run_embed_stage


# --------------------------------------------------------------------------- a worker process

WORKER_DIM = 32
_WORKER = f"""
import logging
logging.basicConfig(level=logging.INFO)
from crossfeed.core.settings import Settings
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.streams.worker import run_worker
run_worker(Settings(), embedder=HashingEmbedder(dim={WORKER_DIM}))
"""


def _cleanup_deployment(name: str) -> None:
    """Topics, every collection of the deployment (all model versions) and Redis keys."""
    import redis
    from kafka import KafkaAdminClient

    from crossfeed.core.kafka import KafkaConnection
    from crossfeed.core.settings import Settings
    from crossfeed.indexer.client import milvus_client
    from crossfeed.indexer.collections import ours

    settings = Settings()
    with contextlib.suppress(Exception):
        admin = KafkaAdminClient(**KafkaConnection(settings.kafka).kafka_python())
        admin.delete_topics([f"{name}.{t}" for t in ("raw", "clean", "vectors", "deadletter")])
        admin.close()
    with contextlib.suppress(Exception):
        client = milvus_client(settings.milvus)
        for collection in client.list_collections():
            if ours(collection, name):
                client.drop_collection(collection)
        client.close()
    client = redis.Redis.from_url(settings.redis.url.get_secret_value())
    keys = list(client.scan_iter(f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def worker_deployment(
    engines: object, unique_name: Callable[[str], str], tmp_path: Path
) -> Callable[..., contextlib.AbstractContextManager[dict[str, str]]]:
    """``with worker_deployment("prefix", {"CROSSFEED_X": "1"}) as env:`` a worker process
    (hashing embedder) on private topics, collection and Redis prefix, with this process's
    environment pointing at them; ``env["log"]`` is the worker's log. Removed afterwards."""

    @contextlib.contextmanager
    def deploy(prefix: str, extra: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
        from crossfeed.core.settings import Settings
        from crossfeed.streams.topics import ensure_topics

        name = unique_name(prefix)
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
            **(extra or {}),
        }
        saved = dict(os.environ)
        os.environ.update(env)
        ensure_topics(Settings().kafka)
        log_path = tmp_path / "worker.log"
        with log_path.open("wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-c", _WORKER],
                env={**saved, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            yield {**env, "log": str(log_path)}
        finally:
            worker.kill()
            worker.wait()
            try:
                _cleanup_deployment(name)
            finally:
                os.environ.clear()
                os.environ.update(saved)

    return deploy
