"""The index stage: idempotent upserts, retries, bad-row isolation, ack after upsert."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from crossfeed.core.schema import DeadLetter, VectorRecord
from crossfeed.core.settings import KafkaSettings, Settings, StreamSettings
from crossfeed.indexer.base import IndexRow
from crossfeed.indexer.exceptions import IndexUnavailableError
from crossfeed.indexer.memory import InMemoryIndex
from crossfeed.streams.app import AGENT_NAMES, create_app
from crossfeed.streams.hooks import LiveHooks
from crossfeed.streams.index import IndexStage
from crossfeed.streams.metrics import WorkerMetrics
from crossfeed.streams.testing import RecordingPublisher

TOPICS = KafkaSettings()
DIM = 8


def _record(
    post_id: str, item: int = 0, dim: int = DIM, value: float = 1.0, source: str | None = None
) -> bytes:
    now = datetime(2024, 5, 1, tzinfo=UTC)
    vector = [0.0] * dim
    vector[item % dim] = value
    record = VectorRecord(
        post_id=post_id,
        item=item,
        modality="text" if item == 0 else "image",
        vector=vector,
        model_version="m1",
        created_at=now,
        embedded_at=now,
        author="a",
        text="t",
        tags=["beach"],
        lang=None,
        media_ref=None,
        source=source,
    )
    return record.model_dump_json().encode()


class _Epoch:
    def __init__(self) -> None:
        self.value = 0

    def bump(self) -> int:
        self.value += 1
        return self.value


class _FlakyIndex(InMemoryIndex):
    """Fails the first ``failures`` upserts as if Milvus were down."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def upsert(self, rows: Sequence[IndexRow]) -> int:
        if self.failures > 0:
            self.failures -= 1
            raise IndexUnavailableError("milvus is down")
        return super().upsert(rows)


def _stage(index: Any, epoch: _Epoch | None = None) -> tuple[IndexStage, RecordingPublisher]:
    pub = RecordingPublisher()
    stage = IndexStage(
        index=index, epoch=epoch, publisher=pub, topics=TOPICS, metrics=WorkerMetrics()
    )
    return stage, pub


async def test_upsert_is_idempotent_and_bumps_epoch() -> None:
    index, epoch = InMemoryIndex(), _Epoch()
    stage, pub = _stage(index, epoch)
    report = await stage.handle_batch([_record("a"), _record("a", 1), _record("b"), _record("a")])
    assert report.rows_written == 3 and report.epoch == 1
    await stage.handle_batch([_record("a"), _record("b")])  # replay after a restart
    assert index.count() == 3
    assert epoch.value == 2
    row = index.get_post("a")[0]
    assert row.row_id == "a:text:0" and row.created_at_ms == 1714521600000 and row.lang == ""
    assert pub.messages == []
    stage.close()


async def test_source_reaches_the_index_and_old_records_have_none() -> None:
    index = InMemoryIndex()
    stage, _ = _stage(index, _Epoch())
    await stage.handle_batch([_record("new", source="bluesky"), _record("old")])
    assert index.get_post("new")[0].source == "bluesky"
    assert index.get_post("old")[0].source == ""  # written before records carried it
    stage.close()


async def test_retriable_errors_are_retried_not_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    import crossfeed.streams.delivery as stages

    real_sleep = asyncio.sleep
    monkeypatch.setattr(stages.asyncio, "sleep", lambda s: real_sleep(0))
    index = _FlakyIndex(failures=3)
    stage, pub = _stage(index, _Epoch())
    report = await stage.handle_batch([_record("a"), _record("b")])
    assert report.rows_written == 2 and index.failures == 0 and index.count() == 2
    assert pub.messages == []
    stage.close()


async def test_bad_rows_are_isolated_and_deadlettered() -> None:
    index = InMemoryIndex()
    stage, pub = _stage(index, _Epoch())
    values = [_record(f"p{i}") for i in range(6)]
    values.insert(3, _record("wrong-dim", dim=DIM + 1))
    values.insert(1, b"{not a record")
    report = await stage.handle_batch(values)
    assert report.rows_written == 6 and report.deadlettered == 2
    assert index.count() == 6
    letters = [DeadLetter.model_validate_json(v) for _, v in pub.on(TOPICS.topic_deadletter)]
    assert {(d.stage, d.post_id) for d in letters} == {("index", None), ("index", "wrong-dim")}
    assert any("invalid vector record" in d.reason for d in letters)
    stage.close()


async def test_index_agent_acks_only_after_upsert_returned() -> None:
    """The property the restart integration test relies on, checked in isolation."""
    gate = threading.Event()
    entered = threading.Event()

    class GatedIndex(InMemoryIndex):
        def upsert(self, rows: Sequence[IndexRow]) -> int:
            entered.set()
            gate.wait(10)
            return super().upsert(rows)

    settings = Settings()
    settings.stream = StreamSettings(CROSSFEED_BATCH_SIZE=2, CROSSFEED_BATCH_WAIT=0.1)
    index = GatedIndex()
    app = create_app(
        settings,
        stages=("index",),
        publisher=RecordingPublisher(),
        index=index,
        epoch=_Epoch(),
        live=LiveHooks(),
    )
    async with app.agents[AGENT_NAMES["index"]].test_context() as agent:
        events = [await agent.put(_record(p), wait=False) for p in ("a", "b")]
        await asyncio.get_running_loop().run_in_executor(None, entered.wait, 10)
        await asyncio.sleep(0.2)
        assert not any(e.message.acked for e in events), "acked before the index accepted"
        gate.set()
        deadline = asyncio.get_running_loop().time() + 10
        while not agent.results and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        assert all(e.message.acked for e in events)
    assert index.count() == 2


async def test_new_rows_are_matched_against_standing_queries_once_accepted() -> None:
    """The index stage records a match only for rows the index accepted (a refused row
    notifies nobody), and a replayed batch records nothing twice."""
    from crossfeed.indexer.base import SearchFilter
    from crossfeed.indexer.exceptions import IndexOperationError
    from crossfeed.live.base import Subscription
    from crossfeed.live.memory import MemorySubscriptions
    from crossfeed.live.percolator import Percolator

    store = MemorySubscriptions()
    vector = np.zeros(DIM, dtype=np.float32)
    vector[0] = 1.0  # what _record puts in an item-0 row
    await store.create(
        Subscription(
            id="s1",
            name="s1",
            kind="text",
            query="q",
            min_score=0.9,
            filter=SearchFilter(model_version="m1"),
            filters={},
            vector=vector,
            model_version="m1",
            created_at_ms=0,
        ),
        limit=10,
    )

    class Refusing(InMemoryIndex):
        def upsert(self, rows: Any) -> int:
            if any(r.post_id == "bad" for r in rows):
                raise IndexOperationError("refused")
            return super().upsert(rows)

    stage = IndexStage(
        index=Refusing(),
        epoch=None,
        publisher=RecordingPublisher(),
        topics=TOPICS,
        metrics=WorkerMetrics(),
        percolator=Percolator(store),
    )
    batch = [_record("good"), _record("bad"), _record("far", item=1)]
    report = await stage.handle_batch(batch)
    assert report.matches == 1 and report.deadlettered == 1
    assert (await stage.handle_batch(batch)).matches == 0  # a replay: nothing new
    events = await store.read_events("s1", "0", count=10, block_s=0)
    assert [e.data["post_id"] for e in events] == ["good"]
    stage.close()
