"""How the embed stage tells errors apart: configuration errors stop it (and the worker),
retriable ones are retried, and only a post's own failure dead-letters that post."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import crossfeed.streams.embed as embed_module
from crossfeed.core.schema import CleanPost, DeadLetter, Post, VectorRecord
from crossfeed.core.settings import KafkaSettings, Settings, StreamSettings
from crossfeed.encoders.base import Embedder
from crossfeed.encoders.exceptions import HeadVersionError, MediaDecodeError, ModelLoadError
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.exceptions import CrossfeedError
from crossfeed.streams import delivery
from crossfeed.streams.app import AGENT_NAMES, create_app
from crossfeed.streams.embed import EmbedReport, EmbedStage
from crossfeed.streams.exceptions import WorkerError
from crossfeed.streams.hooks import LiveHooks
from crossfeed.streams.media import DecodeLimits, MediaFetcher, MediaPolicy
from crossfeed.streams.metrics import WorkerMetrics
from crossfeed.streams.testing import RecordingPublisher

TOPICS = KafkaSettings()
BLUE = (0, 0, 255)


def _clean(post_id: str, *, text: str | None = None, media: Sequence[Any] = ()) -> bytes:
    """The ``posts.clean`` message of a post with hashtag "beach"."""
    post = Post.model_validate(
        {
            "id": post_id,
            "source": "test",
            "author": "alice",
            "created_at": "2024-05-01T12:00:00Z",
            "text": f"a post about the beach {post_id}" if text is None else text,
            "media": list(media),
        }
    )
    clean = CleanPost(
        post=post,
        clean_text=post.text,
        hashtags=["beach"],
        content_hash=post_id,
        received_at=datetime.now(UTC),
    )
    return clean.model_dump_json().encode()


def _stage(embedder: Embedder | Callable[[], Embedder]) -> tuple[EmbedStage, RecordingPublisher]:
    settings, pub = Settings(), RecordingPublisher()
    stage = EmbedStage(
        embedder=embedder,
        fetcher=MediaFetcher(MediaPolicy.from_settings(settings)),
        limits=DecodeLimits.from_settings(settings),
        publisher=pub,
        topics=TOPICS,
        metrics=WorkerMetrics(),
    )
    return stage, pub


async def _handle(
    embedder: Embedder | Callable[[], Embedder], values: list[bytes]
) -> tuple[EmbedReport, RecordingPublisher]:
    stage, pub = _stage(embedder)
    try:
        return await stage.handle_batch(values), pub
    finally:
        stage.close()


def _vectors(pub: RecordingPublisher) -> list[VectorRecord]:
    return [VectorRecord.model_validate_json(v) for _, v in pub.on(TOPICS.topic_vectors)]


def _letters(pub: RecordingPublisher) -> list[DeadLetter]:
    return [DeadLetter.model_validate_json(v) for _, v in pub.on(TOPICS.topic_deadletter)]


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The embed stage's retry back-off, made instant; the list records each delay."""
    delays: list[float] = []

    async def instant(seconds: float) -> None:
        delays.append(seconds)

    instant_retry = functools.partial(delivery.retry_forever, sleep=instant)
    monkeypatch.setattr(embed_module, "retry_forever", instant_retry, raising=False)
    return delays


# --------------------------------------------------------------------------- fakes


class BrokenTowerEmbedder(HashingEmbedder):
    """A lazily loaded tower that cannot load: ``modality`` calls raise ``error``."""

    def __init__(self, modality: str, error: Exception) -> None:
        super().__init__(dim=16)
        self._modality = modality
        self._error = error

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if self._modality == "text":
            raise self._error
        return super().embed_texts(texts)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if self._modality == "image":
            raise self._error
        return super().embed_images(images)


class FlakyEmbedder(HashingEmbedder):
    """Text calls fail ``failures`` times with ``error``, then work."""

    def __init__(self, failures: int, error: Exception) -> None:
        super().__init__(dim=16)
        self.failures = failures
        self._error = error

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if self.failures > 0:
            self.failures -= 1
            raise self._error
        return super().embed_texts(texts)


class ChokesOnBlueEmbedder(HashingEmbedder):
    """Image calls containing a pure blue image raise ``error`` (a tower refusing one image)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(dim=16)
        self._error = error

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if any(im.convert("RGB").getpixel((0, 0)) == BLUE for im in images):
            raise self._error
        return super().embed_images(images)


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("modality", "error"),
    [
        ("text", ModelLoadError("cannot load text model '/no/such/model' from local files")),
        ("image", ModelLoadError("image model checkpoint not found: /no/such.pt")),
        ("text", HeadVersionError("head version v9 is missing")),
    ],
)
async def test_configuration_error_stops_the_stage_without_dead_letters(
    image_media: Callable[..., dict[str, Any]],
    png: Callable[..., bytes],
    modality: str,
    error: Exception,
) -> None:
    values = [_clean(f"p{i}", media=[image_media(png())]) for i in range(3)]
    stage, pub = _stage(BrokenTowerEmbedder(modality, error))
    try:
        with pytest.raises(type(error)) as raised:
            await stage.handle_batch(values)
    finally:
        stage.close()
    assert raised.value is error
    assert pub.messages == []  # no dead letters, no vectors: nothing of the batch is lost


async def test_loader_configuration_error_stops_the_stage() -> None:
    calls = 0

    def load() -> Embedder:
        nonlocal calls
        calls += 1
        raise ModelLoadError("cannot load text model 'typo' from local files")

    with pytest.raises(ModelLoadError, match="typo"):
        await _handle(load, [_clean("p1"), _clean("p2")])
    assert calls == 1


# --------------------------------------------------------------------------- retriable


@pytest.mark.parametrize(
    "error",
    [
        CrossfeedError("the GPU is busy", retriable=True),
        ConnectionError("model server unreachable"),
        TimeoutError("model server timed out"),
    ],
)
async def test_retriable_embedding_error_is_retried_not_deadlettered(
    sleeps: list[float], error: Exception
) -> None:
    embedder = FlakyEmbedder(failures=2, error=error)
    report, pub = await _handle(embedder, [_clean("p1"), _clean("p2"), _clean("p3")])
    assert embedder.failures == 0 and len(sleeps) == 2
    assert report.deadlettered == 0 and report.vectors == 3
    assert sorted(r.post_id for r in _vectors(pub)) == ["p1", "p2", "p3"]
    assert _letters(pub) == []


async def test_retriable_loader_error_is_retried(sleeps: list[float]) -> None:
    attempts: list[int] = []

    def load() -> Embedder:
        attempts.append(1)
        if len(attempts) < 3:
            raise CrossfeedError("model store unreachable", retriable=True)
        return HashingEmbedder(dim=16)

    report, pub = await _handle(load, [_clean("p1")])
    assert len(attempts) == 3 and len(sleeps) == 2
    assert report.vectors == 1 and _letters(pub) == []


# --------------------------------------------------------------------------- bad posts


async def test_corrupt_image_deadletters_only_that_post(
    image_media: Callable[..., dict[str, Any]], png: Callable[..., bytes]
) -> None:
    values = [
        _clean("good", media=[image_media(png())]),
        _clean("corrupt", media=[image_media(png()[:30])]),
        _clean("text-only"),
    ]
    report, pub = await _handle(HashingEmbedder(dim=16), values)
    assert report.deadlettered == 1
    [letter] = _letters(pub)
    assert letter.stage == "decode" and letter.post_id == "corrupt"
    assert "media 1 (image" in letter.reason
    got = sorted((r.post_id, r.modality) for r in _vectors(pub))
    assert got == [("good", "image"), ("good", "text"), ("text-only", "text")]


@pytest.mark.parametrize(
    "error",
    [
        MediaDecodeError("the tower cannot read this image"),  # bad input
        RuntimeError("a bug that only this image triggers"),  # unexpected, as before
    ],
)
async def test_embedding_error_of_one_post_deadletters_only_that_post(
    image_media: Callable[..., dict[str, Any]], png: Callable[..., bytes], error: Exception
) -> None:
    values = [
        _clean("red", media=[image_media(png())]),
        _clean("blue", media=[image_media(png(BLUE))]),
        _clean("green", media=[image_media(png((0, 200, 0)))]),
    ]
    report, pub = await _handle(ChokesOnBlueEmbedder(error), values)
    assert report.deadlettered == 1
    [letter] = _letters(pub)
    assert letter.stage == "embed" and letter.post_id == "blue"
    assert str(error) in letter.reason
    assert {r.post_id for r in _vectors(pub)} == {"red", "green"}


# --------------------------------------------------------------------------- the worker


def _embed_app(embedder: Embedder, pub: RecordingPublisher) -> Any:
    settings = Settings()
    settings.stream = StreamSettings(
        CROSSFEED_APP_ID="crossfeed-test-embed-errors",
        CROSSFEED_BATCH_SIZE=4,
        CROSSFEED_BATCH_WAIT=0.05,
    )
    return create_app(
        settings,
        stages=("embed",),
        publisher=pub,
        embedder=embedder,
        metrics=WorkerMetrics(),
        live=LiveHooks(),
    )


async def test_embed_agent_crashes_the_app_on_a_configuration_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    error = ModelLoadError("cannot load text model '/no/such/model' from local files")
    pub = RecordingPublisher()
    app = _embed_app(BrokenTowerEmbedder("text", error), pub)
    async with app.agents[AGENT_NAMES["embed"]].test_context() as agent:
        with pytest.raises(ModelLoadError):
            await agent.put(_clean("p1"), key=b"p1")
        assert agent.results == {}  # the batch never completed (and was not acked)
    assert app.crashed and app.crash_reason is error  # a crashed app stops its worker
    assert pub.messages == []
    assert any(
        r.levelname == "CRITICAL"
        and "embed stage failed" in r.getMessage()
        and "/no/such/model" in r.getMessage()
        for r in caplog.records
    )


class _CrashedWorker:
    """Stands in for ``faust.Worker``: the app crashed with ``reason``, exit status 1."""

    reason: BaseException | None = None

    def __init__(self, *services: Any, **options: Any) -> None:
        self.crash_reason = type(self).reason

    def execute_from_commandline(self) -> None:
        raise SystemExit(1)


@pytest.mark.parametrize("reason", [ModelLoadError("cannot load text model 'typo'"), None])
def test_run_worker_names_the_crash_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, reason: BaseException | None
) -> None:
    import faust

    from crossfeed.streams.worker import run_worker

    monkeypatch.setattr(_CrashedWorker, "reason", reason)
    monkeypatch.setattr(faust, "Worker", _CrashedWorker)
    monkeypatch.setenv("CROSSFEED_STATE_DIR", str(tmp_path))
    with pytest.raises(WorkerError) as raised:
        run_worker(Settings(), stages=("embed",), embedder=HashingEmbedder(dim=16))
    if reason is None:
        assert str(raised.value) == "stream worker stopped with status 1"
    else:
        assert str(raised.value) == "stream worker stopped: ModelLoadError: " + str(reason)
        assert raised.value.__cause__ is reason
