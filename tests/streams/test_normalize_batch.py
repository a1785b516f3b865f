"""The normalize stage on micro-batches: the same outcomes as one record at a time, with
one erasure check and one repost check per batch (they had paced text ingest)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from crossfeed.core.schema import CleanPost
from crossfeed.core.settings import KafkaSettings
from crossfeed.indexer.erasure import Eraser, MemoryErasureLedger, RemovedRows
from crossfeed.streams.dedupe import DedupeStore, InMemoryDedupeStore
from crossfeed.streams.metrics import WorkerMetrics
from crossfeed.streams.normalize import NormalizeStage
from crossfeed.streams.testing import RecordingPublisher

TOPICS = KafkaSettings()


class CountingLedger(MemoryErasureLedger):
    def __init__(self) -> None:
        super().__init__()
        self.checks: list[list[str]] = []

    async def erased(self, post_ids):  # type: ignore[no-untyped-def]
        ids = list(post_ids)
        self.checks.append(ids)
        return await super().erased(ids)


class CountingStore(InMemoryDedupeStore):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    async def claim_many(self, claims: Sequence[tuple[str, str]]) -> list[str]:
        self.batches.append(len(claims))
        return await super().claim_many(claims)


def _stage(
    dedupe: DedupeStore, ledger: MemoryErasureLedger
) -> tuple[NormalizeStage, RecordingPublisher]:
    pub = RecordingPublisher()
    eraser = Eraser(ledger, lambda post_id: RemovedRows({}), None)
    stage = NormalizeStage(
        dedupe=dedupe, publisher=pub, topics=TOPICS, metrics=WorkerMetrics(), eraser=eraser
    )
    return stage, pub


async def test_a_batch_costs_one_erasure_check_and_one_repost_check(
    raw_post: Callable[..., bytes],
) -> None:
    store, ledger = CountingStore(), CountingLedger()
    stage, pub = _stage(store, ledger)
    records = [(raw_post(f"p{i}", text=f"post number {i}"), None, None) for i in range(20)]
    assert await stage.handle_batch(records) == ["clean"] * 20
    assert store.batches == [20]
    assert ledger.checks == [[f"p{i}" for i in range(20)]]
    assert [k for k, _ in pub.on(TOPICS.topic_clean)] == [f"p{i}" for i in range(20)]


async def test_a_batch_gives_the_outcomes_of_one_record_at_a_time(
    raw_post: Callable[..., bytes],
) -> None:
    records = [
        (raw_post("orig", text="Same words #Beach"), None, None),
        (b"{not json", None, None),
        (raw_post("copy", text="same   WORDS #beach"), None, None),
        (raw_post("links", text="https://t.co/x @bob", tags=[]), None, None),
        (raw_post("other", text="Other words"), None, None),
        (raw_post("orig", text="Same words #Beach"), None, None),  # a replay
    ]
    expected = ["clean", "deadletter", "duplicate", "deadletter", "clean", "clean"]
    one_stage, one_pub = _stage(InMemoryDedupeStore(), MemoryErasureLedger())
    one = [await one_stage.handle(raw, at, key) for raw, at, key in records]
    batch_stage, batch_pub = _stage(InMemoryDedupeStore(), MemoryErasureLedger())
    assert one == expected
    assert await batch_stage.handle_batch(records) == expected
    clean = [CleanPost.model_validate_json(v) for _, v in batch_pub.on(TOPICS.topic_clean)]
    assert [(c.post.id, c.duplicate_of) for c in clean] == [
        ("orig", None),
        ("copy", "orig"),
        ("other", None),
        ("orig", None),
    ]
    assert len(batch_pub.on(TOPICS.topic_deadletter)) == len(one_pub.on(TOPICS.topic_deadletter))


async def test_a_tombstone_splits_the_batch_and_erase_wins(raw_post: Callable[..., bytes]) -> None:
    ledger = CountingLedger()
    stage, pub = _stage(CountingStore(), ledger)
    records = [
        (raw_post("a", text="first words"), None, None),
        (None, None, "a"),  # a tombstone for a
        (raw_post("a", text="first words"), None, None),  # a late copy of a: dropped
        (raw_post("b", text="first words"), None, None),  # the content is new again
    ]
    assert await stage.handle_batch(records) == ["clean", "erased", "dropped", "clean"]
    assert ledger.checks == [["a"], ["a", "b"]]
    assert pub.on(TOPICS.topic_clean)[1] == ("a", None)


@pytest.mark.integration
@pytest.mark.usefixtures("engines")
async def test_redis_claim_many_is_claim_in_order(redis_dedupe: Any) -> None:
    store, client, prefix = redis_dedupe
    assert await store.claim("h0", "early") == "early"
    owners = await store.claim_many(
        [("h1", "a"), ("h1", "b"), ("h2", "c"), ("h1", "a"), ("h0", "d")]
    )
    assert owners == ["a", "a", "c", "a", "early"]
    assert await store.claim("h2", "e") == "c"  # claim and claim_many share keys
    assert await client.get(f"{prefix}:repost:b") == b"a"
    assert await client.get(f"{prefix}:repost:d") == b"early"
    assert await client.get(f"{prefix}:repost:a") is None
    assert await client.get(f"{prefix}:dedupe-post:a") == b"h1"
    keys = [k async for k in client.scan_iter(f"{prefix}:*")]
    ttls = [await client.ttl(k) for k in keys]
    assert len(keys) == 9 and all(0 < t <= 60 for t in ttls)
    await store.forget("a")  # erasure releases a claim made by the batch
    assert await store.claim("h1", "z") == "z"
