"""Reindex logic without engines: names, the routing publisher, the index stage's
version guard, the caught-up rule, and the checks made before anything connects."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from crossfeed.core.schema import VectorRecord
from crossfeed.core.settings import KafkaSettings, Settings
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.indexer.collections import default_collection, slug
from crossfeed.indexer.memory import InMemoryIndex
from crossfeed.streams.exceptions import ReindexError
from crossfeed.streams.hooks import LiveHooks
from crossfeed.streams.index import IndexStage
from crossfeed.streams.metrics import WorkerMetrics
from crossfeed.streams.pipeline import build_pipeline
from crossfeed.streams.reindex import RoutingPublisher, default_group, run_reindex
from crossfeed.streams.reindex_kafka import CatchUpPoller
from crossfeed.streams.testing import RecordingPublisher

TOPICS = KafkaSettings()
MILVUS_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")

# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "version",
    ["hash-v2", "heads-20240601T120000Z-a1b2c3", "9lives", "a.b", "x" * 100, "plain_v1"],
)
def test_slug_is_a_valid_deterministic_name_part(version: str) -> None:
    out = slug(version)
    assert MILVUS_NAME.match(out), out
    assert len(out) <= 100
    assert slug(version) == out


def test_slug_keeps_clean_names_and_separates_lookalikes() -> None:
    assert slug("plain_v1") == "plain_v1"
    assert slug("hash-v2").startswith("hash_v2_")
    lookalikes = {slug(v) for v in ("a-b", "a.b", "a_b", "a__b")}
    assert len(lookalikes) == 4


def test_default_collection_and_group() -> None:
    assert default_collection("crossfeed_posts", "plain_v1") == "crossfeed_posts__plain_v1"
    name = default_collection("crossfeed_posts", "heads-20240601T120000Z-a1b2c3")
    assert name.startswith("crossfeed_posts__heads_20240601T120000Z_a1b2c3_")
    assert MILVUS_NAME.match(name)
    long_name = default_collection("c" * 250, "v" * 100)
    assert len(long_name) == 255 and MILVUS_NAME.match(long_name)
    assert long_name != default_collection("c" * 250, "w" * 100)
    assert default_group("crossfeed", "hash-v2") == f"crossfeed-reindex-{slug('hash-v2')}"


# --------------------------------------------------------------------------- routing


async def test_routing_publisher_keeps_vectors_and_forwards_the_rest() -> None:
    forward = RecordingPublisher()
    routing = RoutingPublisher(TOPICS.topic_vectors, forward)
    await routing.publish(TOPICS.topic_vectors, "p1", b"v1")
    await routing.publish(TOPICS.topic_deadletter, "p2", b"dead")
    await routing.publish(TOPICS.topic_vectors, "p3", b"v2")
    assert routing.drain() == [b"v1", b"v2"]
    assert routing.drain() == []
    assert forward.messages == [(TOPICS.topic_deadletter, "p2", b"dead")]


# --------------------------------------------------------------------------- version guard


def _records(embedder: HashingEmbedder, post_ids: Sequence[str]) -> list[bytes]:
    now = datetime(2024, 5, 1, tzinfo=UTC)
    texts = [f"post {pid} about the sea" for pid in post_ids]
    vectors = embedder.embed_texts(texts)
    return [
        VectorRecord(
            post_id=pid,
            item=0,
            modality="text",
            vector=[float(x) for x in vec],
            model_version=embedder.version,
            created_at=now,
            embedded_at=now,
            author="a",
            text=text,
            tags=[],
            lang=None,
            media_ref=None,
        )
        .model_dump_json()
        .encode()
        for pid, text, vec in zip(post_ids, texts, vectors, strict=True)
    ]


def _skipped(metrics: WorkerMetrics) -> float:
    value = metrics.registry.get_sample_value(
        "crossfeed_index_skipped_rows_total", {"reason": "other_version"}
    )
    return value or 0.0


async def test_index_stage_skips_other_versions(caplog: pytest.LogCaptureFixture) -> None:
    old, new = (
        HashingEmbedder(dim=16, version="hash-v1"),
        HashingEmbedder(dim=16, version="hash-v2"),
    )
    index, pub, metrics = InMemoryIndex(), RecordingPublisher(), WorkerMetrics()
    stage = IndexStage(
        index=index,
        epoch=None,
        publisher=pub,
        topics=TOPICS,
        metrics=metrics,
        model_version="hash-v2",
    )
    caplog.set_level(logging.INFO, logger="crossfeed.streams.index")
    # The new version's row first; an old record for the same post must not overwrite it.
    first = await stage.handle_batch(_records(new, ["a", "b"]))
    second = await stage.handle_batch(_records(old, ["a", "c"]) + _records(new, ["d"]))
    third = await stage.handle_batch(_records(old, ["e"]))
    stage.close()

    assert (first.rows_written, first.skipped) == (2, 0)
    assert (second.rows_written, second.skipped, second.deadlettered) == (1, 2, 0)
    assert (third.rows_written, third.skipped) == (0, 1)
    assert index.count() == 3
    assert {r.model_version for r in index.get_post("a")} == {"hash-v2"}
    assert index.get_post("c") == []
    assert _skipped(metrics) == 3
    assert pub.messages == []  # skipped records are not dead letters
    notes = [r for r in caplog.records if "hash-v1" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.INFO


async def test_index_stage_without_version_takes_all() -> None:
    index, metrics = InMemoryIndex(), WorkerMetrics()
    stage = IndexStage(
        index=index, epoch=None, publisher=RecordingPublisher(), topics=TOPICS, metrics=metrics
    )
    one, two = HashingEmbedder(dim=16, version="v1"), HashingEmbedder(dim=16, version="v2")
    report = await stage.handle_batch(_records(one, ["a"]) + _records(two, ["b"]))
    stage.close()
    assert (report.rows_written, report.skipped) == (2, 0)
    assert _skipped(metrics) == 0


class _Epoch:
    def bump(self) -> int:
        return 1


def _pipeline_index(
    settings: Settings, stages: tuple[str, ...], **kwargs: Any
) -> tuple[IndexStage, InMemoryIndex]:
    index = InMemoryIndex()
    pipe = build_pipeline(
        settings,
        stages=stages,
        publisher=RecordingPublisher(),
        index=index,
        epoch=_Epoch(),
        **{"live": LiveHooks(), **kwargs},
    )
    assert pipe.index is not None
    return pipe.index, index


@pytest.mark.parametrize(
    ("stages", "configured", "embedder_version", "written"),
    [
        (("embed", "index"), "latest", "hash-v2", {"n"}),  # the worker's embedder decides
        (("embed", "index"), "hash-v1", "hash-v2", {"n"}),
        (("index",), "hash-v1", None, {"o"}),  # index-only: the configured version
        (("index",), "latest", None, {"o", "n"}),  # "latest" is unknown here: accept all
    ],
)
async def test_pipeline_wires_the_version_guard(
    stages: tuple[str, ...], configured: str, embedder_version: str | None, written: set[str]
) -> None:
    settings = Settings()
    settings.encoder = settings.encoder.model_copy(update={"model_version": configured})
    kwargs = (
        {"embedder": HashingEmbedder(dim=16, version=embedder_version)} if embedder_version else {}
    )
    stage, index = _pipeline_index(settings, stages, **kwargs)
    old, new = (
        HashingEmbedder(dim=16, version="hash-v1"),
        HashingEmbedder(dim=16, version="hash-v2"),
    )
    await stage.handle_batch(_records(old, ["o"]) + _records(new, ["n"]))
    stage.close()
    assert {pid for pid in ("o", "n") if index.get_post(pid)} == written


# --------------------------------------------------------------------------- caught up


@dataclass(frozen=True)
class _TP:
    topic: str
    partition: int


@dataclass
class _Msg:
    value: bytes


class _Consumer:
    """Two partitions; the broker under-reports partition 1's end offset (1 of 3)."""

    def __init__(self, late: list[bytes] | None = None) -> None:
        self.tps = [_TP("t", 0), _TP("t", 1)]
        self.logs = {self.tps[0]: [b"a", b"b"], self.tps[1]: [b"c", b"d", b"e"]}
        self.pos = dict.fromkeys(self.tps, 0)
        self.late = late or []
        self.polls = 0

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1} if topic == "t" else set()

    def subscribe(self, topics: list[str]) -> None:
        assert topics == ["t"]

    def end_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return {self.tps[0]: 2, self.tps[1]: 1}

    def assignment(self) -> set[Any]:
        return set(self.tps) if self.polls > 1 else set()  # the group join takes a poll

    def position(self, tp: Any) -> int:
        return self.pos[tp]

    def poll(self, timeout_ms: int = 0) -> dict[Any, list[_Msg]]:
        self.polls += 1
        if self.polls in (1, 4):  # joining the group; a fetch still in flight
            return {}
        if self.polls == 5 and self.late:  # a post produced while the run is going
            self.logs[self.tps[0]].extend(self.late)
        out = {}
        for tp in self.assignment():
            records = self.logs[tp][self.pos[tp] : self.pos[tp] + 1]
            self.pos[tp] += len(records)
            if records:
                out[tp] = [_Msg(v) for v in records]
        return out


def _poller(
    consumer: _Consumer, topic: str = "t", follow: bool = False, idle_s: float = 0.3
) -> CatchUpPoller:
    return CatchUpPoller(consumer, topic, follow=follow, idle_s=idle_s, join_timeout_s=5.0)


def test_poller_reads_past_under_reported_end_offsets() -> None:
    seen: list[bytes | None] = []
    stopped = _poller(_Consumer(late=[b"late"])).run(seen.extend, threading.Event(), False)
    assert sorted(v or b"" for v in seen) == [b"a", b"b", b"c", b"d", b"e", b"late"]
    assert stopped is False


def test_poller_without_idle_guard_trusts_the_end_offsets() -> None:
    """The counter-check: end offsets alone stop too early on such a broker."""
    seen: list[bytes | None] = []
    _poller(_Consumer(late=[b"late"]), idle_s=0.0).run(seen.extend, threading.Event(), False)
    assert len(seen) == 4


def test_poller_stops_on_request_and_reports_it() -> None:
    stop = threading.Event()
    stop.set()
    assert _poller(_Consumer(), follow=True).run(lambda values: None, stop, False) is True


def test_poller_refuses_a_missing_topic() -> None:
    with pytest.raises(ReindexError, match="nope does not exist"):
        _poller(_Consumer(), "nope").run(lambda values: None, threading.Event(), False)


# --------------------------------------------------------------------------- checks


def test_run_refuses_an_embedder_of_another_version() -> None:
    with pytest.raises(ReindexError, match="hash-v1, not hash-v2"):
        run_reindex(Settings(), "hash-v2", embedder=HashingEmbedder(version="hash-v1"))


def test_run_refuses_a_bad_collection_name() -> None:
    with pytest.raises(ReindexError, match="invalid Milvus collection name"):
        run_reindex(
            Settings(),
            "hash-v2",
            collection="no-dashes",
            embedder=HashingEmbedder(version="hash-v2"),
        )


def test_run_reports_a_missing_head_version(tmp_path: Any) -> None:
    settings = Settings()
    settings.encoder = settings.encoder.model_copy(update={"models_dir": tmp_path})
    with pytest.raises(ReindexError, match=r"'missing-v9' not found.*versions in .*: none"):
        run_reindex(settings, "missing-v9")


async def test_dead_letters_are_sent_off_the_event_loop() -> None:
    """kafka-python's send blocks (metadata waits up to max_block_ms): never on the loop."""
    import asyncio

    from crossfeed.streams.reindex_kafka import KafkaPublisher

    on_loop: list[bool] = []

    class Future:
        def add_errback(self, fn: Any) -> Future:
            return self

    class Producer:
        def send(self, topic: str, key: bytes | None, value: bytes) -> Future:
            on_loop.append(asyncio._get_running_loop() is not None)
            return Future()

    made: list[Producer] = []

    def factory() -> Any:
        on_loop.append(asyncio._get_running_loop() is not None)
        made.append(Producer())
        return made[-1]

    publisher = KafkaPublisher(factory)
    await asyncio.gather(*(publisher.publish("dl", f"k{i}", b"v") for i in range(5)))
    assert publisher.sent == 5 and len(made) == 1
    assert on_loop and not any(on_loop)
