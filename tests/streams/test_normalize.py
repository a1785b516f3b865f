"""Stage helpers and normalize edge cases, without faust."""

from __future__ import annotations

import asyncio
import json

import pytest

from crossfeed.core.schema import CleanPost, DeadLetter
from crossfeed.core.settings import KafkaSettings
from crossfeed.streams.dedupe import DedupeStore, InMemoryDedupeStore
from crossfeed.streams.delivery import DeadLetters, retry_forever
from crossfeed.streams.exceptions import DedupeUnavailableError, MediaRefusedError
from crossfeed.streams.metrics import WorkerMetrics
from crossfeed.streams.normalize import NormalizeStage
from crossfeed.streams.testing import RecordingPublisher

TOPICS = KafkaSettings()


async def _no_sleep(_: float) -> None:
    await asyncio.sleep(0)


async def test_retry_forever_retries_retriable_and_raises_the_rest() -> None:
    calls = {"n": 0}

    async def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 4:
            raise DedupeUnavailableError("redis down")
        return "ok"

    assert await retry_forever(flaky, what="x", sleep=_no_sleep) == "ok"
    assert calls["n"] == 4

    async def refused() -> str:
        calls["n"] += 1
        raise MediaRefusedError("never")

    with pytest.raises(MediaRefusedError):
        await retry_forever(refused, what="x", sleep=_no_sleep)
    assert calls["n"] == 5


async def test_deadletter_payload_cut_to_fit_one_message() -> None:
    pub = RecordingPublisher()
    dead = DeadLetters(pub, "dl", WorkerMetrics(), max_message_bytes=2000)
    await dead.send("parse", "too big", b"x" * 10_000, "p1")
    [(key, value)] = pub.on("dl")
    assert len(value) <= 2000 and key == "p1"
    letter = DeadLetter.model_validate_json(value)
    assert "payload cut to" in letter.reason and "of 10000 bytes" in letter.reason
    assert letter.payload == "x" * len(letter.payload) and 0 < len(letter.payload) < 2000


def _stage(
    dedupe: DedupeStore | None = None, **kw: int
) -> tuple[NormalizeStage, RecordingPublisher]:
    pub = RecordingPublisher()
    stage = NormalizeStage(
        dedupe=dedupe or InMemoryDedupeStore(),
        publisher=pub,
        topics=TOPICS,
        metrics=WorkerMetrics(),
        **kw,
    )
    return stage, pub


def _letter(pub: RecordingPublisher) -> DeadLetter:
    [(_, value)] = pub.on(TOPICS.topic_deadletter)
    return DeadLetter.model_validate_json(value)


async def test_absurd_json_is_deadlettered_not_crashing(raw_post) -> None:  # type: ignore[no-untyped-def]
    stage, pub = _stage()
    assert await stage.handle(b"[" * 100_000 + b"]" * 100_000) == "deadletter"
    assert _letter(pub).stage == "parse"


async def test_oversized_clean_post_is_deadlettered(raw_post) -> None:  # type: ignore[no-untyped-def]
    stage, pub = _stage(max_message_bytes=3000)
    assert await stage.handle(raw_post("big", text="word " * 500)) == "deadletter"
    letter = _letter(pub)
    assert letter.stage == "normalize" and "over the 3000-byte limit" in letter.reason
    assert pub.on(TOPICS.topic_clean) == []


async def test_cleaning_bug_costs_one_post(raw_post, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import crossfeed.streams.normalize as stages

    def boom(text: str) -> tuple[str, list[str]]:
        if "explode" in text:
            raise RuntimeError("unexpected")
        return text, []

    monkeypatch.setattr(stages, "clean_text_and_hashtags", boom)
    stage, pub = _stage()
    assert await stage.handle(raw_post("a", text="please explode")) == "deadletter"
    assert await stage.handle(raw_post("b", text="fine")) == "clean"
    assert "RuntimeError: unexpected" in _letter(pub).reason
    assert [k for k, _ in pub.on(TOPICS.topic_clean)] == ["b"]


async def test_redis_outage_is_waited_out(raw_post, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import crossfeed.streams.delivery as stages

    real_sleep = asyncio.sleep
    monkeypatch.setattr(stages.asyncio, "sleep", lambda s: real_sleep(0))

    class Flaky(InMemoryDedupeStore):
        failures = 3

        async def claim(self, content_hash: str, post_id: str) -> str:
            if self.failures:
                self.failures -= 1
                raise DedupeUnavailableError("down")
            return await super().claim(content_hash, post_id)

    store = Flaky()
    stage, pub = _stage(store)
    assert await stage.handle(raw_post("a")) == "clean"
    assert store.failures == 0
    [(_, value)] = pub.on(TOPICS.topic_clean)
    assert CleanPost.model_validate_json(value).post.id == "a"


async def test_tags_only_post_is_kept(raw_post) -> None:  # type: ignore[no-untyped-def]
    stage, pub = _stage()
    assert await stage.handle(raw_post("t", text="", tags=["#SunsetBeach"])) == "clean"
    [(_, value)] = pub.on(TOPICS.topic_clean)
    clean = CleanPost.model_validate_json(value)
    assert clean.clean_text == "" and clean.hashtags == ["sunset beach"]
    assert json.loads(value)["post"]["tags"] == ["#SunsetBeach"]  # the original is kept


@pytest.mark.parametrize("field", ["id", "author", "metadata"])
async def test_lone_surrogates_are_dead_lettered_not_crashing(raw_post, field: str) -> None:  # type: ignore[no-untyped-def]
    """A JSON "\\ud800" escape parses to text no UTF-8 encoder takes. String fields refuse
    it; free-form metadata used to let it through, and serialising the clean post then
    raised out of the stage. The dead letter itself must encode, key included."""
    stage, pub = _stage()
    post = json.loads(raw_post("p1"))
    post["metadata"] = {"k": "v"}
    if field == "metadata":
        post["metadata"] = {"nested": [{"\ud800": "x"}]}
    else:
        post[field] = "\ud800" + post[field]
    raw = json.dumps(post).encode()  # ensure_ascii: the surrogate travels as "\\ud800"
    assert b"\\ud800" in raw
    assert await stage.handle(raw) == "deadletter"
    letter = _letter(pub)
    assert letter.stage == "validate" and field in letter.reason
    [(key, _)] = pub.on(TOPICS.topic_deadletter)
    assert key == ("?p1" if field == "id" else "p1")
