"""The trends step: what the index and normalize stages hand the tracker, and that a
failing or slow tracker never stops them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pytest

from crossfeed.core.schema import VectorRecord
from crossfeed.core.settings import KafkaSettings, Settings
from crossfeed.indexer.base import IndexRow
from crossfeed.indexer.memory import InMemoryIndex
from crossfeed.streams.dedupe import InMemoryDedupeStore
from crossfeed.streams.hooks import LiveHooks
from crossfeed.streams.index import IndexStage
from crossfeed.streams.metrics import WorkerMetrics
from crossfeed.streams.normalize import NormalizeStage
from crossfeed.streams.pipeline import build_pipeline
from crossfeed.streams.testing import RecordingPublisher
from crossfeed.streams.trends import TrendsStep, observations_from_rows
from crossfeed.trends.base import Observation, TrendKind, TrendTracker, TrendView
from crossfeed.trends.exceptions import TrendsUnavailableError

TOPICS = KafkaSettings()
DIM = 4
WHEN = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class _RecordingTracker(TrendTracker):
    """A tracker that records what it was given (unit tests only); fails while ``down``."""

    def __init__(self) -> None:
        self.batches: list[list[Observation]] = []
        self.down = False
        self.gate: threading.Event | None = None

    def observe(self, batch: Sequence[Observation]) -> None:
        if self.gate is not None:
            self.gate.wait(5)
        if self.down:
            raise TrendsUnavailableError("redis is down")
        self.batches.append(list(batch))

    @property
    def seen(self) -> list[Observation]:
        return [o for b in self.batches for o in b]

    def current(
        self, *, kind: TrendKind | None = None, limit: int = 20, now: float | None = None
    ) -> list[TrendView]:
        return []

    def get(self, trend_id: str) -> TrendView | None:
        return None

    def member_ids(self, trend_id: str, limit: int = 10_000) -> list[str]:
        return []


def _row(
    post_id: str, item: int, *, moment: int | None = None, tags: Sequence[str] = ()
) -> IndexRow:
    vector = [0.0] * DIM
    vector[item % DIM] = 1.0
    return IndexRow(
        row_id=f"{post_id}:{item}:{moment}",
        post_id=post_id,
        item=item,
        modality="text" if item == 0 else "image",
        vector=vector,
        created_at_ms=int(WHEN.timestamp() * 1000),
        author="alice",
        text="a post",
        tags=list(tags),
        lang="",
        model_version="m1",
        media_ref="" if item == 0 else f"file:///m/{post_id}/{item}.png",
        moment=moment,
    )


def test_one_observation_per_post_with_the_text_vector_else_the_first_media() -> None:
    rows = [
        _row("p1", 2),
        _row("p1", 0, tags=["cats", "cats", "sun"]),
        _row("p1", 1),
        _row("p2", 2, moment=0),  # a video moment never stands for a post
        _row("p2", 2),
        _row("p2", 1),
    ]
    obs = {o.post_id: o for o in observations_from_rows(rows)}
    assert list(obs) == ["p1", "p2"]
    p1, p2 = obs["p1"], obs["p2"]
    assert p1.vector is not None and int(np.argmax(p1.vector)) == 0  # the text row's vector
    assert p1.hashtags == ("cats", "sun") and p1.author == "alice"
    assert p1.created_at == WHEN.timestamp()
    assert p1.media_ref == "file:///m/p1/1.png" and p1.duplicate_of is None
    assert p2.vector is not None and int(np.argmax(p2.vector)) == 1  # first media item
    assert p2.media_ref == "file:///m/p2/1.png"


def _record(post_id: str, item: int = 0) -> bytes:
    return (
        VectorRecord(
            post_id=post_id,
            item=item,
            modality="text" if item == 0 else "image",
            vector=[1.0, 0.0, 0.0, 0.0],
            model_version="m1",
            created_at=WHEN,
            embedded_at=WHEN,
            author="bob",
            text="t",
            tags=["beach"],
            lang=None,
            media_ref=None,
        )
        .model_dump_json()
        .encode()
    )


def _index_stage(tracker: TrendTracker, metrics: WorkerMetrics) -> tuple[IndexStage, TrendsStep]:
    step = TrendsStep(tracker, metrics)
    stage = IndexStage(
        index=InMemoryIndex(),
        epoch=None,
        publisher=RecordingPublisher(),
        topics=TOPICS,
        metrics=metrics,
        trends=step,
    )
    return stage, step


async def test_index_stage_feeds_accepted_posts_to_the_tracker() -> None:
    tracker, metrics = _RecordingTracker(), WorkerMetrics()
    stage, step = _index_stage(tracker, metrics)
    try:
        report = await stage.handle_batch([_record("p1"), _record("p1", 1), _record("p2"), b"{"])
        assert report.rows_written == 3 and report.deadlettered == 1
        assert step.flush()
        assert sorted(o.post_id for o in tracker.seen) == ["p1", "p2"]
        assert all(o.hashtags == ("beach",) and o.author == "bob" for o in tracker.seen)
        assert metrics.trends_observed._value.get() == 2
    finally:
        stage.close()
        step.close()


async def test_a_failing_tracker_costs_counts_not_indexing() -> None:
    tracker, metrics = _RecordingTracker(), WorkerMetrics()
    tracker.down = True
    stage, step = _index_stage(tracker, metrics)
    try:
        for i in range(3):
            report = await stage.handle_batch([_record(f"p{i}")])
            assert report.rows_written == 1  # indexing went on
        assert step.flush()
        assert metrics.trends_errors._value.get() >= 1
        assert metrics.trends_lost._value.get() == 3
        assert metrics.trends_observed._value.get() == 0
        tracker.down = False  # Redis is back: the next batch is counted
        await stage.handle_batch([_record("p9")])
        assert step.flush()
        assert [o.post_id for o in tracker.seen] == ["p9"]
    finally:
        stage.close()
        step.close()


async def test_a_stuck_tracker_never_blocks_the_stage_and_drops_past_the_bound() -> None:
    tracker, metrics = _RecordingTracker(), WorkerMetrics()
    tracker.gate = threading.Event()  # the tracker hangs until released
    step = TrendsStep(tracker, metrics, max_queued=3)
    stage = IndexStage(
        index=InMemoryIndex(),
        epoch=None,
        publisher=RecordingPublisher(),
        topics=TOPICS,
        metrics=metrics,
        trends=step,
    )
    try:
        for i in range(8):
            report = await asyncio.wait_for(stage.handle_batch([_record(f"p{i}")]), 5)
            assert report.rows_written == 1
        assert metrics.trends_dropped._value.get() >= 4
        tracker.gate.set()
        assert step.flush()
        assert 1 <= len(tracker.seen) <= 4
    finally:
        tracker.gate.set()
        stage.close()
        step.close()


async def test_retriable_failures_are_retried_and_the_rest_cost_the_batch() -> None:
    metrics, opened = WorkerMetrics(), []

    def factory() -> TrendTracker:
        if not opened:  # Redis not there yet: retried after a short wait
            opened.append(None)
            raise TrendsUnavailableError("not yet")
        tracker = _RecordingTracker()
        opened.append(tracker)
        return tracker

    step = TrendsStep(factory, metrics)
    obs = Observation(post_id="p", author="a", created_at=WHEN.timestamp())
    step.submit([obs])
    assert step.flush()
    tracker = opened[-1]
    assert isinstance(tracker, _RecordingTracker) and [o.post_id for o in tracker.seen] == ["p"]
    assert metrics.trends_errors._value.get() == 0

    def broken(batch: Sequence[Observation]) -> None:
        raise ValueError("a bug, not an outage")

    tracker.observe = broken  # type: ignore[method-assign]
    step.submit([obs, obs])
    assert step.flush()
    step.close()
    assert metrics.trends_errors._value.get() == 1 and metrics.trends_lost._value.get() == 2


async def test_normalize_hands_reposts_to_the_tracker_as_attention_for_the_original() -> None:
    tracker, metrics = _RecordingTracker(), WorkerMetrics()
    step = TrendsStep(tracker, metrics)
    stage = NormalizeStage(
        dedupe=InMemoryDedupeStore(),
        publisher=RecordingPublisher(),
        topics=TOPICS,
        metrics=metrics,
        trends=step,
    )
    when = WHEN.isoformat()
    first = b'{"id": "o1", "source": "t", "author": "a", "created_at": "%s", "text": "hi #Sun"}'
    again = b'{"id": "r1", "source": "t", "author": "b", "created_at": "%s", "text": "hi #Sun"}'
    assert await stage.handle(first % when.encode()) == "clean"
    assert await stage.handle(again % when.encode()) == "duplicate"
    assert step.flush()
    step.close()
    [repost] = tracker.seen  # the original reaches the tracker through the index stage
    assert repost.post_id == "r1" and repost.duplicate_of == "o1" and repost.author == "b"
    assert repost.hashtags == ("sun",) and repost.vector is None
    assert repost.created_at == WHEN.timestamp()


@pytest.mark.parametrize("flag", ["0", "1"])
def test_the_step_is_on_by_default_and_off_with_crossfeed_trends_0(
    flag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CROSSFEED_TRENDS", flag)
    settings = Settings()
    pipe = build_pipeline(
        settings,
        stages=("normalize",),
        publisher=RecordingPublisher(),
        dedupe=None,
        eraser=None,
        live=LiveHooks(),
    )
    try:
        assert (pipe.trends is not None) == (flag == "1")
    finally:
        asyncio.run(pipe.aclose())
