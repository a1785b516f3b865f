"""The faust agents, driven through faust's in-memory test harness (no broker)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from crossfeed.core.schema import CleanPost, DeadLetter, VectorRecord
from crossfeed.core.settings import KafkaSettings, Settings, StreamSettings
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.streams.app import AGENT_NAMES, create_app
from crossfeed.streams.dedupe import InMemoryDedupeStore
from crossfeed.streams.hooks import LiveHooks
from crossfeed.streams.metrics import WorkerMetrics
from crossfeed.streams.testing import RecordingPublisher

TOPICS = KafkaSettings()


def _settings(batch_size: int = 8, batch_wait_s: float = 0.2) -> Settings:
    settings = Settings()
    settings.stream = StreamSettings(
        CROSSFEED_APP_ID="crossfeed-test-streams",
        CROSSFEED_BATCH_SIZE=batch_size,
        CROSSFEED_BATCH_WAIT=batch_wait_s,
    )
    return settings


def _metric(metrics: WorkerMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting for the agent")
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- normalize


@pytest.fixture
def normalize_app() -> tuple[Any, RecordingPublisher, WorkerMetrics]:
    pub = RecordingPublisher()
    metrics = WorkerMetrics()
    app = create_app(
        _settings(),
        stages=("normalize",),
        publisher=pub,
        dedupe=InMemoryDedupeStore(),
        metrics=metrics,
        live=LiveHooks(),
    )
    return app, pub, metrics


async def test_normalize_valid_post_goes_to_clean(normalize_app, raw_post) -> None:  # type: ignore[no-untyped-def]
    app, pub, metrics = normalize_app
    async with app.agents[AGENT_NAMES["normalize"]].test_context() as agent:
        text = "Sooooo pretty!!! https://t.co/x @bob #SunsetBeach"
        await agent.put(raw_post("p1", text=text, tags=["Travel"]), key=b"p1")
        assert agent.results[0] == "clean"
    [(key, value)] = pub.on(TOPICS.topic_clean)
    clean = CleanPost.model_validate_json(value)
    assert key == "p1" and clean.post.id == "p1"
    assert clean.clean_text == "Soo pretty!"
    assert clean.hashtags == ["sunset beach", "travel"]
    assert clean.duplicate_of is None and len(clean.content_hash) == 64
    assert pub.on(TOPICS.topic_deadletter) == []
    assert _metric(metrics, "crossfeed_posts_out_total", stage="normalize") == 1


@pytest.mark.parametrize(
    ("payload", "stage", "reason", "post_id"),
    [
        (b"{not json", "parse", "malformed JSON", None),
        (b"\xff\xfe\x00garbage", "parse", "malformed JSON", None),
        (b"", "parse", "empty message", None),
        (b"[1, 2]", "validate", "expected a JSON object", None),
        (
            json.dumps({"id": "p9", "source": "s", "author": "a", "text": "x"}).encode(),
            "validate",
            "created_at: Field required",
            "p9",
        ),
        (
            json.dumps(
                {"id": "p8", "source": "s", "author": "a", "created_at": "2024-01-01T00:00:00Z"}
            ).encode(),
            "validate",
            "no text, tags or media",
            "p8",
        ),
        (
            json.dumps(
                {
                    "id": "p7",
                    "source": "s",
                    "author": "a",
                    "created_at": "2024-01-01T00:00:00Z",
                    "media": [{"kind": "image", "path": "/x.png", "url": "https://x/y.png"}],
                }
            ).encode(),
            "validate",
            "exactly one of",
            "p7",
        ),
        (
            json.dumps(
                {
                    "id": "p6",
                    "source": "s",
                    "author": "a",
                    "created_at": "2024-01-01T00:00:00Z",
                    "media": [{"kind": "image", "data_base64": "!!notbase64!!"}],
                }
            ).encode(),
            "validate",
            "base64",
            "p6",
        ),
        (
            json.dumps(
                {
                    "id": "p5",
                    "source": "s",
                    "author": "a",
                    "created_at": "2024-01-01T00:00:00Z",
                    "text": "@bob https://t.co/x",
                }
            ).encode(),
            "normalize",
            "nothing left",
            "p5",
        ),
    ],
)
async def test_normalize_bad_input_goes_to_deadletter(
    normalize_app,  # type: ignore[no-untyped-def]
    raw_post,
    payload: bytes,
    stage: str,
    reason: str,
    post_id: str | None,
) -> None:
    app, pub, metrics = normalize_app
    async with app.agents[AGENT_NAMES["normalize"]].test_context() as agent:
        await agent.put(payload, key=b"k")
        await agent.put(raw_post("ok"), key=b"ok")  # the stream keeps flowing
        assert agent.results == {0: "deadletter", 1: "clean"}
    [(key, value)] = pub.on(TOPICS.topic_deadletter)
    letter = DeadLetter.model_validate_json(value)
    assert letter.stage == stage and reason in letter.reason
    assert letter.post_id == post_id and key == post_id
    if letter.payload_encoding == "utf-8":
        assert letter.payload.encode() == payload
    else:
        import base64

        assert base64.b64decode(letter.payload) == payload
    assert [k for k, _ in pub.on(TOPICS.topic_clean)] == ["ok"]
    assert _metric(metrics, "crossfeed_deadletters_total", stage=stage) == 1


async def test_normalize_detects_reposts(normalize_app, raw_post, image_media, png) -> None:  # type: ignore[no-untyped-def]
    app, pub, metrics = normalize_app
    media = [image_media(png((1, 2, 3)))]
    async with app.agents[AGENT_NAMES["normalize"]].test_context() as agent:
        await agent.put(raw_post("orig", text="Same words #Beach", media=media))
        await agent.put(raw_post("copy", text="same   WORDS #beach", media=media))
        await agent.put(raw_post("other", text="Same words #Beach", media=[image_media(png())]))
        await agent.put(raw_post("orig", text="Same words #Beach", media=media))  # replay
        assert list(agent.results.values()) == ["clean", "duplicate", "clean", "clean"]
    cleans = [CleanPost.model_validate_json(v) for _, v in pub.on(TOPICS.topic_clean)]
    assert [(c.post.id, c.duplicate_of) for c in cleans] == [
        ("orig", None),
        ("copy", "orig"),
        ("other", None),
        ("orig", None),
    ]
    assert cleans[0].content_hash == cleans[1].content_hash != cleans[2].content_hash
    assert _metric(metrics, "crossfeed_duplicates_total") == 1


# --------------------------------------------------------------------------- embed


def _clean_bytes(post_id: str, **overrides: Any) -> bytes:
    from datetime import UTC, datetime

    from crossfeed.core.schema import Post

    duplicate_of = overrides.pop("duplicate_of", None)
    hashtags = overrides.pop("hashtags", ["beach"])
    post = Post.model_validate(
        {
            "id": post_id,
            "source": "test",
            "author": "alice",
            "created_at": "2024-05-01T12:00:00Z",
            "text": overrides.pop("text", f"a post about the beach {post_id}"),
            **overrides,
        }
    )
    clean = CleanPost(
        post=post,
        clean_text=post.text,
        hashtags=hashtags,
        content_hash=post_id,
        duplicate_of=duplicate_of,
        received_at=datetime.now(UTC),
    )
    return clean.model_dump_json().encode()


@pytest.fixture
def embed_app() -> tuple[Any, RecordingPublisher, HashingEmbedder, WorkerMetrics]:
    pub = RecordingPublisher()
    embedder = HashingEmbedder(dim=16)
    metrics = WorkerMetrics()
    app = create_app(
        _settings(batch_size=4, batch_wait_s=0.2),
        stages=("embed",),
        publisher=pub,
        embedder=embedder,
        metrics=metrics,
        live=LiveHooks(),
    )
    return app, pub, embedder, metrics


async def _run_embed(app: Any, values: list[bytes]) -> list[Any]:
    async with app.agents[AGENT_NAMES["embed"]].test_context() as agent:
        for i, value in enumerate(values):
            await agent.put(value, key=str(i).encode(), wait=False)
        await _wait_for(lambda: sum(r.posts for r in agent.results.values()) >= len(values))
        return list(agent.results.values())


async def test_embed_batches_by_size_and_time(embed_app) -> None:  # type: ignore[no-untyped-def]
    app, pub, embedder, metrics = embed_app
    reports = await _run_embed(app, [_clean_bytes(f"p{i}") for i in range(10)])
    # batch_size 4: full batches (normally [4, 4, 2]), the remainder flushed by the timer.
    sizes = [r.posts for r in reports]
    assert sum(sizes) == 10 and max(sizes) == 4 and sizes.count(4) >= 2, sizes
    records = [VectorRecord.model_validate_json(v) for _, v in pub.on(TOPICS.topic_vectors)]
    assert sorted(r.post_id for r in records) == sorted(f"p{i}" for i in range(10))
    assert all(r.modality == "text" and r.item == 0 for r in records)
    assert all(len(r.vector) == 16 and r.model_version == "hashing-v0" for r in records)
    assert embedder.calls["text"] == 10
    assert _metric(metrics, "crossfeed_embedded_total", modality="text") == 10


async def test_embed_media_vectors_and_corrupt_media_deadlettered(
    embed_app,  # type: ignore[no-untyped-def]
    image_media,
    video_media,
    png,
    mp4,
) -> None:
    app, pub, _, _ = embed_app
    good = _clean_bytes("good", media=[image_media(png()), video_media(mp4())])
    bad_image = _clean_bytes("bad-image", media=[image_media(png()[:30])])
    bad_video = _clean_bytes(
        "bad-video", media=[video_media(b"\x00\x00\x00\x18ftypmp42" + bytes(64))]
    )
    media_only = _clean_bytes("media-only", text="", media=[image_media(png((0, 0, 255)))])
    bare = _clean_bytes("bare", text="", hashtags=[], media=[video_media(mp4((9, 9, 9)))])
    repost = _clean_bytes("repost", duplicate_of="good")
    reports = await _run_embed(app, [good, bad_image, repost, bad_video, media_only, bare])
    assert sum(r.deadlettered for r in reports) == 2
    assert sum(r.duplicates_skipped for r in reports) == 1
    records = [VectorRecord.model_validate_json(v) for _, v in pub.on(TOPICS.topic_vectors)]
    got = sorted((r.post_id, r.modality, r.item) for r in records)
    assert got == [
        ("bare", "video", 1),  # no text, no hashtags: no text vector
        ("good", "image", 1),
        ("good", "text", 0),
        ("good", "video", 2),
        ("media-only", "image", 1),
        ("media-only", "text", 0),  # the hashtags still make a text vector
    ]
    # Every item carries the post's source, so the index can filter by it.
    sources = {CleanPost.model_validate_json(m).post.source for m in (good, media_only, bare)}
    assert {r.source for r in records} == sources and None not in sources
    letters = {k: DeadLetter.model_validate_json(v) for k, v in pub.on(TOPICS.topic_deadletter)}
    assert set(letters) == {"bad-image", "bad-video"}
    assert (
        letters["bad-image"].stage == "decode" and "media 1 (image" in letters["bad-image"].reason
    )
    assert letters["bad-video"].stage == "decode" and "video" in letters["bad-video"].reason
    assert CleanPost.model_validate_json(letters["bad-image"].payload).post.id == "bad-image"


def test_workers_of_two_model_versions_never_share_a_consumer_group() -> None:
    """A worker of another version in the same group took partitions, and each index stage
    skips the other's vectors: posts reached neither collection (seen in `make demo`)."""
    from crossfeed.streams.app import consumer_group, create_app

    settings = Settings()
    a = create_app(settings, stages=("embed", "index"), embedder=HashingEmbedder(version="v-a"))
    b = create_app(settings, stages=("embed", "index"), embedder=HashingEmbedder(version="v-b"))
    assert a.conf.id != b.conf.id
    assert a.conf.id.startswith(settings.stream.app_id + "-")
    # Version-independent work keeps the plain id; a pinned version names the group.
    assert consumer_group(settings, ("normalize",), "v-a") == settings.stream.app_id
    pinned = Settings()
    pinned.encoder.model_version = "v-b"
    assert consumer_group(pinned, ("index",), None) == b.conf.id
