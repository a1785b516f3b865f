"""Redis down in the workers: the stages keep going, say so, and pay what they owe once
Redis is back (unit tests over fakes that fail like an unreachable Redis)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from crossfeed.core.breaker import Outage
from crossfeed.core.schema import VectorRecord
from crossfeed.core.settings import KafkaSettings
from crossfeed.indexer.base import SearchFilter
from crossfeed.indexer.erasure import MemoryErasureLedger
from crossfeed.indexer.exceptions import IndexUnavailableError
from crossfeed.indexer.memory import InMemoryIndex
from crossfeed.live.base import Match, Subscription
from crossfeed.live.exceptions import LiveUnavailableError
from crossfeed.live.memory import MemorySubscriptions
from crossfeed.live.percolator import Percolator
from crossfeed.streams.dedupe import InMemoryDedupeStore
from crossfeed.streams.exceptions import DedupeUnavailableError
from crossfeed.streams.index import IndexStage
from crossfeed.streams.metrics import WorkerMetrics
from crossfeed.streams.normalize import NormalizeStage
from crossfeed.streams.testing import RecordingPublisher

TOPICS = KafkaSettings()
DIM = 8
RESET_S = 1.0  # long enough that no trial call falls inside a burst of calls


class Redis:
    """The switch every fake below shares: is Redis up?"""

    def __init__(self) -> None:
        self.up = True
        self.calls_while_down = 0

    def check(self, error: type[Exception]) -> None:
        if not self.up:
            self.calls_while_down += 1
            raise error("Connection refused")


class Dedupe(InMemoryDedupeStore):
    def __init__(self, redis: Redis) -> None:
        super().__init__()
        self.redis = redis

    async def claim(self, content_hash: str, post_id: str) -> str:
        self.redis.check(DedupeUnavailableError)
        return await super().claim(content_hash, post_id)


class Epoch:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.value = 0
        self.fences: list[int | None] = []

    def bump(self, fence: int | None = None) -> int:
        self.redis.check(IndexUnavailableError)
        self.value += 1
        self.fences.append(fence)
        return self.value


class Ledger(MemoryErasureLedger):
    def __init__(self, redis: Redis) -> None:
        super().__init__()
        self.redis = redis

    async def erased(self, post_ids: Iterable[str]) -> set[str]:
        self.redis.check(IndexUnavailableError)
        return await super().erased(post_ids)


class Feed(MemorySubscriptions):
    def __init__(self, redis: Redis) -> None:
        super().__init__()
        self.redis = redis

    def version(self) -> int:
        self.redis.check(LiveUnavailableError)
        return super().version()

    def record(self, matches: Sequence[Match]) -> int:
        self.redis.check(LiveUnavailableError)
        return super().record(matches)


class FencedIndex(InMemoryIndex):
    def __init__(self) -> None:
        super().__init__()
        self.fence = 0

    def upsert(self, rows: Any) -> int:
        self.fence += 10
        return super().upsert(rows)

    def write_fence(self) -> int | None:
        return self.fence


def _outage() -> Outage:
    return Outage("redis", failures=2, reset_s=RESET_S, retry_delay_s=0)


def _record(post_id: str) -> bytes:
    now = datetime(2024, 5, 1, tzinfo=UTC)
    vector = [1.0] + [0.0] * (DIM - 1)
    return (
        VectorRecord(
            post_id=post_id,
            item=0,
            modality="text",
            vector=vector,
            model_version="m1",
            created_at=now,
            embedded_at=now,
            author="a",
            text="t",
            tags=[],
            lang=None,
            media_ref=None,
        )
        .model_dump_json()
        .encode()
    )


async def _subscribe(feed: MemorySubscriptions) -> None:
    await feed.create(
        Subscription(
            id="s1",
            name="s1",
            kind="text",
            query="q",
            min_score=0.5,
            filter=SearchFilter(model_version="m1"),
            filters={},
            vector=np.asarray([1.0] + [0.0] * (DIM - 1), dtype=np.float32),
            model_version="m1",
            created_at_ms=0,
        ),
        limit=10,
    )


async def _recovered(outage: Outage) -> None:
    """Wait until the breaker lets a trial call through."""
    time.sleep(RESET_S * 1.5)
    assert outage.state != "open"


async def test_normalize_forwards_originals_without_repost_checks_and_logs_once(
    raw_post: Callable[..., bytes], caplog: pytest.LogCaptureFixture
) -> None:
    redis, outage, metrics, pub = Redis(), _outage(), WorkerMetrics(), RecordingPublisher()
    stage = NormalizeStage(
        dedupe=Dedupe(redis), publisher=pub, topics=TOPICS, metrics=metrics, outage=outage
    )
    assert await stage.handle(raw_post("a", text="same words")) == "clean"
    redis.up = False
    with caplog.at_level(logging.WARNING):
        outcomes = [await stage.handle(raw_post(f"r{i}", text="same words")) for i in range(50)]
    # Reposts of "a" all go on as originals: the check was skipped, and counted.
    assert outcomes == ["clean"] * 50
    assert metrics.repost_checks_skipped._value.get() == 50
    assert redis.calls_while_down == 2  # two failures open the circuit; then no more calls
    assert len([r for r in caplog.records if "without repost" in r.getMessage()]) == 1
    clean = [json.loads(v or b"") for _, v in pub.on(TOPICS.topic_clean)]
    assert all(c["duplicate_of"] is None for c in clean)

    redis.up = True
    await _recovered(outage)
    assert await stage.handle(raw_post("late", text="same words")) == "duplicate"


async def test_normalize_without_a_breaker_still_waits_for_redis(
    raw_post: Callable[..., bytes],
) -> None:
    """No breaker (what tools that must not degrade pass): retried until Redis answers."""

    class Blip(Redis):
        def check(self, error: type[Exception]) -> None:
            try:
                super().check(error)
            finally:
                self.up = self.calls_while_down >= 2  # back after two refused calls

    redis = Blip()
    redis.up = False
    stage = NormalizeStage(
        dedupe=Dedupe(redis), publisher=RecordingPublisher(), topics=TOPICS, metrics=WorkerMetrics()
    )
    assert await stage.handle(raw_post("a")) == "clean"
    assert redis.calls_while_down == 2


async def test_index_owes_the_epoch_bump_and_pays_it_with_the_newest_fence() -> None:
    redis, outage, metrics = Redis(), _outage(), WorkerMetrics()
    epoch, index = Epoch(redis), FencedIndex()
    stage = IndexStage(
        index=index,
        epoch=epoch,
        publisher=RecordingPublisher(),
        topics=TOPICS,
        metrics=metrics,
        outage=outage,
    )
    assert (await stage.handle_batch([_record("a")])).epoch == 1
    redis.up = False
    for n in range(5):
        report = await stage.handle_batch([_record(f"b{n}")])
        assert report.rows_written == 1 and report.epoch is None  # indexed, bump owed
    assert index.count() == 6
    assert stage.owed["epoch_bump"] == 1 and metrics.epoch_bump_owed._value.get() == 1
    assert redis.calls_while_down == 2
    assert not await stage.settle()  # still down: nothing paid, nothing raised

    redis.up = True
    await _recovered(outage)
    assert await stage.settle()
    assert epoch.value == 2 and epoch.fences[-1] == 60  # the newest fence of the outage
    assert stage.owed["epoch_bump"] == 0 and metrics.epoch_bump_owed._value.get() == 0
    stage.close()


async def test_index_holds_matches_while_down_drops_beyond_the_bound_and_writes_them_after() -> (
    None
):
    redis, outage, metrics = Redis(), _outage(), WorkerMetrics()
    feed = Feed(redis)
    await _subscribe(feed)
    stage = IndexStage(
        index=InMemoryIndex(),
        epoch=None,
        publisher=RecordingPublisher(),
        topics=TOPICS,
        metrics=metrics,
        percolator=Percolator(feed),
        outage=outage,
        match_buffer=3,
    )
    assert (await stage.handle_batch([_record("before")])).matches == 1
    redis.up = False
    for n in range(5):  # matched against the subscriptions as last loaded
        await stage.handle_batch([_record(f"during{n}")])
    assert stage.owed["matches"] == 3
    assert metrics.matches_buffered._value.get() == 3
    assert metrics.matches_dropped._value.get() == 2

    redis.up = True
    await _recovered(outage)
    assert await stage.settle()
    events = await feed.read_events("s1", "0", count=10, block_s=0)
    assert [e.data["post_id"] for e in events] == ["before", "during0", "during1", "during2"]
    assert metrics.matches_buffered._value.get() == 0
    stage.close()


async def test_index_checks_erasures_it_skipped_once_redis_is_back() -> None:
    redis, outage, metrics = Redis(), _outage(), WorkerMetrics()
    ledger, index = Ledger(redis), InMemoryIndex()
    await ledger.add("erased-before")
    stage = IndexStage(
        index=index,
        epoch=None,
        publisher=RecordingPublisher(),
        topics=TOPICS,
        metrics=metrics,
        erasures=ledger,
        outage=outage,
    )
    redis.up = False
    # A copy of a post erased earlier arrives while the ledger cannot be read: indexed...
    await stage.handle_batch([_record("erased-before"), _record("kept")])
    assert {r.post_id for r in index.get_post("erased-before")} == {"erased-before"}
    assert stage.owed["erasure_checks"] == 2

    redis.up = True
    await _recovered(outage)
    assert await stage.settle()  # ... and removed as soon as the ledger answers
    assert index.get_post("erased-before") == [] and len(index.get_post("kept")) == 1
    assert metrics.erasure_checks_owed._value.get() == 0
    stage.close()


async def test_the_next_batch_pays_what_is_owed_before_its_own_work() -> None:
    redis, outage = Redis(), _outage()
    epoch = Epoch(redis)
    stage = IndexStage(
        index=FencedIndex(),
        epoch=epoch,
        publisher=RecordingPublisher(),
        topics=TOPICS,
        metrics=WorkerMetrics(),
        outage=outage,
    )
    redis.up = False
    await stage.handle_batch([_record("a")])
    redis.up = True
    await _recovered(outage)
    report = await stage.handle_batch([_record("b")])
    assert epoch.fences == [10, 20] and report.epoch == 2 and stage.owed["epoch_bump"] == 0
    stage.close()


async def test_embed_skips_thumbnails_while_redis_is_down_and_still_publishes_vectors(
    embed_batch: Callable[..., Any],
    raw_post: Callable[..., bytes],
    image_media: Callable[..., dict[str, Any]],
) -> None:
    from crossfeed.core.schema import CleanPost, Post
    from crossfeed.encoders.testing import HashingEmbedder
    from crossfeed.streams.hooks import ThumbnailPolicy

    class Writer:
        def __init__(self, redis: Redis) -> None:
            self.redis, self.stored = redis, 0

        def put(self, thumbs: Sequence[Any]) -> None:
            self.redis.check(LiveUnavailableError)
            self.stored += len(thumbs)

    def clean(post_id: str) -> bytes:
        post = Post.model_validate_json(raw_post(post_id, media=[image_media()]))
        return (
            CleanPost(
                post=post,
                clean_text="a post",
                hashtags=[],
                content_hash=post_id,
                received_at=datetime(2024, 5, 1, tzinfo=UTC),
            )
            .model_dump_json()
            .encode()
        )

    redis, outage, metrics = Redis(), _outage(), WorkerMetrics()
    writer = Writer(redis)
    policy = ThumbnailPolicy(writer, outage=outage)  # type: ignore[arg-type]
    embedder = HashingEmbedder(dim=DIM)
    records = await embed_batch(embedder, [clean("a")], metrics=metrics, thumbnails=policy)
    assert writer.stored == 1 and len(records) == 2  # text and image
    redis.up = False
    for n in range(4):
        records = await embed_batch(embedder, [clean(f"b{n}")], metrics=metrics, thumbnails=policy)
        assert len(records) == 2  # the stream goes on
    assert redis.calls_while_down == 2 and writer.stored == 1
    assert metrics.thumbnails_skipped._value.get() == 4
