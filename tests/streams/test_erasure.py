"""Erasure in the stream: tombstones through normalize, erase wins in the index stage."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import pytest

from crossfeed.core.schema import VectorRecord
from crossfeed.core.settings import KafkaSettings, RedisSettings
from crossfeed.indexer.base import IndexRow
from crossfeed.indexer.erasure import Eraser, MemoryErasureLedger, RemovedRows
from crossfeed.indexer.memory import InMemoryIndex
from crossfeed.streams.dedupe import InMemoryDedupeStore, RedisDedupeStore
from crossfeed.streams.index import IndexStage, to_index_row
from crossfeed.streams.metrics import WorkerMetrics
from crossfeed.streams.normalize import NormalizeStage
from crossfeed.streams.testing import RecordingPublisher

TOPICS = KafkaSettings()
DIM = 8


def _record(post_id: str, item: int = 0) -> bytes:
    now = datetime(2024, 5, 1, tzinfo=UTC)
    vector = [0.0] * DIM
    vector[item % DIM] = 1.0
    return (
        VectorRecord(
            post_id=post_id,
            item=item,
            modality="text" if item == 0 else "image",
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


class _Epoch:
    value = 0

    def bump(self, fence: int | None = None) -> int:
        self.value += 1
        return self.value


def _eraser(index: InMemoryIndex, ledger: MemoryErasureLedger) -> Eraser:
    return Eraser(
        ledger, lambda post_id: RemovedRows({"c": index.delete_posts([post_id])}), _Epoch()
    )


async def test_a_tombstone_erases_releases_the_claim_and_reaches_posts_clean(
    raw_post: Callable[..., bytes],
) -> None:
    index, ledger, dedupe = InMemoryIndex(dim=DIM), MemoryErasureLedger(), InMemoryDedupeStore()
    index.ensure_ready(DIM)
    index.upsert([to_index_row(VectorRecord.model_validate_json(_record("p1")))])
    pub = RecordingPublisher()
    stage = NormalizeStage(
        dedupe=dedupe,
        publisher=pub,
        topics=TOPICS,
        metrics=WorkerMetrics(),
        eraser=_eraser(index, ledger),
    )
    assert await stage.handle(raw_post("p1", text="hello world")) == "clean"
    assert await stage.handle(None, key="p1") == "erased"
    assert index.count() == 0
    assert await ledger.erased(["p1"]) == {"p1"}
    assert pub.on(TOPICS.topic_clean)[-1] == ("p1", None)  # compaction deletes the key
    # The same content from another post is an original now, not a repost of an erased one.
    assert await stage.handle(raw_post("p2", text="hello world")) == "clean"


async def test_a_post_erased_before_it_arrived_is_dropped(raw_post: Callable[..., bytes]) -> None:
    ledger, pub = MemoryErasureLedger(), RecordingPublisher()
    await ledger.add("early")
    stage = NormalizeStage(
        dedupe=InMemoryDedupeStore(),
        publisher=pub,
        topics=TOPICS,
        metrics=WorkerMetrics(),
        eraser=_eraser(InMemoryIndex(dim=DIM), ledger),
    )
    assert await stage.handle(raw_post("early")) == "dropped"
    assert pub.messages == []


async def test_a_record_without_a_key_or_value_is_still_a_dead_letter() -> None:
    pub = RecordingPublisher()
    stage = NormalizeStage(
        dedupe=InMemoryDedupeStore(),
        publisher=pub,
        topics=TOPICS,
        metrics=WorkerMetrics(),
        eraser=_eraser(InMemoryIndex(dim=DIM), MemoryErasureLedger()),
    )
    assert await stage.handle(None) == "deadletter"


async def test_the_index_stage_keeps_erased_posts_out_even_when_racing() -> None:
    ledger = MemoryErasureLedger()

    class ErasedDuringUpsert(InMemoryIndex):
        """An erasure lands while the batch is in Milvus' hands."""

        def upsert(self, rows: Sequence[IndexRow]) -> int:
            written = super().upsert(rows)
            asyncio.run_coroutine_threadsafe(ledger.add("racer"), loop).result()
            return written

    loop = asyncio.get_running_loop()
    index = ErasedDuringUpsert(dim=DIM)
    await ledger.add("gone")
    stage = IndexStage(
        index=index,
        epoch=_Epoch(),
        publisher=RecordingPublisher(),
        topics=TOPICS,
        metrics=WorkerMetrics(),
        erasures=ledger,
    )
    report = await stage.handle_batch([_record("gone"), _record("racer"), _record("kept"), None])
    assert report.deadlettered == 0  # the tombstone (None) is no dead letter
    assert {r.post_id for r in index._rows.values()} == {"kept"}


async def test_the_embed_stage_skips_tombstones(embed_batch: Callable[..., object]) -> None:
    from crossfeed.encoders.testing import HashingEmbedder
    from crossfeed.streams.metrics import WorkerMetrics

    metrics = WorkerMetrics()
    records = await embed_batch(HashingEmbedder(dim=DIM), [None, None], metrics=metrics)  # type: ignore[operator]
    assert records == []
    assert metrics.deadletters.labels(stage="embed")._value.get() == 0


@pytest.mark.integration
async def test_redis_dedupe_forgets_an_erased_posts_claim(engines: object) -> None:
    prefix = f"erase_{uuid.uuid4().hex[:10]}"
    store = RedisDedupeStore(RedisSettings().url.get_secret_value(), key_prefix=prefix, ttl_s=60)
    try:
        assert await store.claim("h1", "p1") == "p1"
        assert await store.claim("h1", "p2") == "p1"  # a repost
        await store.forget("p2")  # a repost holds no claim: nothing changes
        assert await store.claim("h1", "p3") == "p1"
        await store.forget("p1")
        assert await store.claim("h1", "p3") == "p3"  # the content is new again
    finally:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(RedisSettings().url.get_secret_value())
        keys = [k async for k in client.scan_iter(f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await store.close()
