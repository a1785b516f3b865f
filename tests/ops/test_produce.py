"""Producing posts to Kafka: encoding, error handling (fake producer), real broker."""

from __future__ import annotations

import argparse
import json
import socket
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest

from crossfeed.core.schema import Post
from crossfeed.core.settings import KafkaSettings
from crossfeed.exceptions import InvalidInputError
from crossfeed.ops.data import produce as produce_mod
from crossfeed.ops.data.produce import (
    MAX_MESSAGE_BYTES,
    _encode,
    ensure_topics,
    produce,
)
from crossfeed.ops.exceptions import ProduceError
from crossfeed.streams.exceptions import TopicError
from crossfeed.streams.topics import Topics


def _post(i: int, text: str = "hello") -> Post:
    return Post(
        id=f"p{i}",
        source="test",
        author="u",
        created_at=datetime(2024, 1, 1, tzinfo=UTC),
        text=f"{text} {i}",
        tags=["t"],
    )


def _settings(**kw: Any) -> KafkaSettings:
    return KafkaSettings(**kw)  # KAFKA_BOOTSTRAP from the environment, as the engines use


# --------------------------------------------------------------------------- unit


def test_encode_keys_by_post_id() -> None:
    key, value = _encode(_post(1))
    assert key == b"p1"
    assert Post.model_validate_json(value) == _post(1)
    raw = _post(2).model_dump_json().encode() + b"\n"
    assert _encode(raw) == (b"p2", raw.strip())
    assert _encode(b"{not json") == (None, b"{not json")
    assert _encode(b'{"id": 5}')[0] is None
    with pytest.raises(InvalidInputError):
        _encode("a str")  # type: ignore[arg-type]


class _Future:
    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def add_errback(self, fn) -> _Future:  # type: ignore[no-untyped-def]
        if self.error is not None:
            fn(self.error)
        return self


class _FakeProducer:
    """Stands in for KafkaProducer: records sends; fails the keys it is told to."""

    instances: ClassVar[list[_FakeProducer]] = []
    fail_keys: ClassVar[set[bytes]] = set()

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.flushed = self.closed = False
        _FakeProducer.instances.append(self)

    def send(self, topic: str, key: bytes | None = None, value: bytes = b"") -> _Future:
        self.sent.append((topic, key, value))
        return _Future(RuntimeError("broker said no") if key in self.fail_keys else None)

    def flush(self, timeout: float | None = None) -> None:
        self.flushed = True

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


@pytest.fixture
def fake_producer(monkeypatch: pytest.MonkeyPatch) -> type[_FakeProducer]:
    import kafka

    _FakeProducer.instances = []
    _FakeProducer.fail_keys = set()
    monkeypatch.setattr(kafka, "KafkaProducer", _FakeProducer)
    return _FakeProducer


def test_produce_sends_every_post_with_acks_all(fake_producer) -> None:
    sent = produce(
        [_post(i) for i in range(5)], _settings(), "t1", progress=False, create_topics=False
    )
    (producer,) = fake_producer.instances
    assert sent == 5
    assert [k for _, k, _ in producer.sent] == [f"p{i}".encode() for i in range(5)]
    assert producer.config["acks"] == "all" and producer.config["linger_ms"] > 0
    assert producer.flushed and producer.closed


def test_produce_raises_on_a_failed_delivery(fake_producer) -> None:
    fake_producer.fail_keys = {b"p2"}
    with pytest.raises(ProduceError, match="1 of 3 posts were not delivered") as info:
        produce(
            [_post(i) for i in range(10)], _settings(), "t1", progress=False, create_topics=False
        )
    assert info.value.retriable
    assert fake_producer.instances[0].flushed  # what was sent is flushed first


def test_produce_refuses_oversized_posts(fake_producer) -> None:
    huge = json.dumps({"id": "h", "pad": "y" * MAX_MESSAGE_BYTES}).encode()
    with pytest.raises(InvalidInputError, match="limit"):
        produce([_post(1), huge], _settings(), "t1", progress=False, create_topics=False)
    assert [k for _, k, _ in fake_producer.instances[0].sent] == [b"p1"]


def test_produce_rejects_bad_topic_names(fake_producer) -> None:
    with pytest.raises(InvalidInputError):
        produce([_post(1)], _settings(), "bad topic!", progress=False, create_topics=False)
    assert not fake_producer.instances


def test_cli_validates_the_whole_file_before_sending(fake_producer, tmp_path: Path) -> None:
    path = tmp_path / "posts.jsonl"
    path.write_text(_post(1).model_dump_json() + "\n" + '{"id": "x"}\n')
    parser = argparse.ArgumentParser()
    produce_mod.add_commands(parser.add_subparsers())
    args = parser.parse_args(["produce", str(path), "--topic", "t", "--no-create-topics"])
    with pytest.raises(InvalidInputError, match=r"posts\.jsonl:2"):
        args.func(args)
    assert not fake_producer.instances
    args = parser.parse_args(
        ["produce", str(path), "--topic", "t", "--no-create-topics", "--no-validate"]
    )
    assert args.func(args) == 0
    assert [k for _, k, _ in fake_producer.instances[0].sent] == [b"p1", b"x"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_broker_is_a_retriable_error() -> None:
    settings = KafkaSettings(KAFKA_BOOTSTRAP=f"127.0.0.1:{_closed_port()}")
    started = time.monotonic()
    with pytest.raises(TopicError, match="cannot reach Kafka") as info:
        ensure_topics(settings, ["t"], timeout_s=1.0)
    assert info.value.retriable
    with pytest.raises(ProduceError, match="cannot reach Kafka"):
        produce([_post(1)], settings, "t", progress=False, create_topics=False, timeout_s=1.0)
    assert time.monotonic() - started < 15


class _FakeAdmin:
    created: ClassVar[dict[str, Any]] = {}

    def __init__(self, **config: Any) -> None:
        pass

    def list_topics(self) -> list[str]:
        return ["posts.raw"]

    def create_topics(self, topics: dict[str, Any], **kw: Any) -> dict[str, Any]:
        _FakeAdmin.created = topics
        return {"topics": [{"name": n, "error_code": 0} for n in topics]}

    def close(self) -> None:
        pass


def test_clean_topic_is_created_compacted(monkeypatch: pytest.MonkeyPatch) -> None:
    """posts.clean is what reindex re-reads: compacted, so no retention time drops posts."""
    import kafka

    monkeypatch.setattr(kafka, "KafkaAdminClient", _FakeAdmin)
    settings = _settings()
    created = ensure_topics(settings)
    assert created == ["posts.clean", "posts.vectors", "posts.deadletter"]  # raw existed
    configs = {name: spec["configs"] for name, spec in _FakeAdmin.created.items()}
    assert configs["posts.clean"] == {"cleanup.policy": "compact"}
    assert configs["posts.vectors"] == {} and configs["posts.deadletter"] == {}
    off = _settings(CROSSFEED_COMPACT_CLEAN_TOPIC=False)
    assert Topics(off).configs(off.topic_clean) == {}


def test_the_stream_app_declares_the_clean_topic_compacted() -> None:
    from crossfeed.core.settings import Settings
    from crossfeed.streams.app import create_app

    app = create_app(Settings(), stages=("embed",), embedder=None)
    topics = app.crossfeed_topics
    assert topics["posts.clean"].compacting is True
    assert not topics["posts.vectors"].compacting and not topics["posts.raw"].compacting


# --------------------------------------------------------------------------- integration


def _consume(broker: str, topic: str, expected: int, timeout_s: float = 30.0) -> list[Any]:
    """Read a topic from the start, by partition assignment (a group join is slow on the
    dev broker) and ``auto_offset_reset=earliest``; end offsets are not used because the
    dev broker under-reports them."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=[broker],
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


@pytest.mark.integration
@pytest.mark.usefixtures("engines")
def test_produce_corpus_and_read_it_back(tmp_path: Path) -> None:
    from crossfeed.corpus.build import build_corpus

    corpus = build_corpus(
        tmp_path / "corpus", clipart_root=None, seed=1, progress=False, inline_fraction=0.3
    )
    posts = corpus.posts[:50]
    topic = f"test.corpus.{uuid.uuid4().hex[:10]}"
    settings = _settings(CROSSFEED_PARTITIONS=2)
    assert produce(posts, settings, topic, progress=False) == 50
    records = _consume(settings.bootstrap, topic, 50)
    assert len(records) == 50
    by_id = {p.id: p for p in posts}
    got = {}
    for record in records:
        post = Post.model_validate_json(record.value)
        assert record.key == post.id.encode()
        got[post.id] = post
    assert got == by_id
    assert {r.partition for r in records} <= {0, 1}


@pytest.mark.integration
@pytest.mark.usefixtures("engines")
def test_ensure_topics_creates_once_and_tolerates_existing() -> None:
    from kafka import KafkaAdminClient

    topic = f"test.corpus.{uuid.uuid4().hex[:10]}"
    settings = _settings(CROSSFEED_PARTITIONS=3)
    assert ensure_topics(settings, [topic]) == [topic]
    assert ensure_topics(settings, [topic]) == []
    admin = KafkaAdminClient(bootstrap_servers=[settings.bootstrap])
    try:
        (desc,) = admin.describe_topics([topic])
    finally:
        admin.close()
    assert len(desc["partitions"]) == 3
