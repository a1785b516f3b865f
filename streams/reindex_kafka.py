"""Kafka plumbing of ``crossfeed reindex``: clients, the dead-letter publisher, and
the poll loop that decides when a run has caught up (see :mod:`crossfeed.streams.reindex`)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from crossfeed.core.kafka import PRODUCER_MAX_REQUEST_BYTES, KafkaConnection
from crossfeed.streams.exceptions import ReindexError

if TYPE_CHECKING:
    from kafka import KafkaConsumer, KafkaProducer

    from crossfeed.core.settings import Settings

log = logging.getLogger(__name__)


class KafkaPublisher:
    """A :class:`Publisher` over a kafka-python producer made on first use (dead letters
    are rare). :meth:`flush` raises unless every message was acknowledged."""

    def __init__(self, factory: Callable[[], KafkaProducer], timeout_s: float = 30.0) -> None:
        self._factory = factory
        self._producer: KafkaProducer | None = None
        self._timeout_s = timeout_s
        self._failures: list[BaseException] = []
        self._lock = threading.Lock()
        self.sent = 0

    async def publish(self, topic: str, key: str | None, value: bytes | None) -> None:
        """Hand one message to the producer, off the event loop: making the producer and
        ``send`` (which waits for metadata, up to ``max_block_ms``) both block."""
        await asyncio.to_thread(self._send, topic, key, value)

    def _send(self, topic: str, key: str | None, value: bytes | None) -> None:
        from kafka.errors import KafkaError

        try:
            with self._lock:
                if self._producer is None:
                    self._producer = self._factory()
                producer = self._producer
            future = producer.send(topic, key=key.encode("utf-8") if key else None, value=value)
        except KafkaError as exc:
            raise ReindexError(f"cannot publish to {topic}: {exc}", retriable=True) from exc
        future.add_errback(self._failures.append)
        self.sent += 1

    def flush(self) -> None:
        from kafka.errors import KafkaTimeoutError

        if self._producer is None:
            return
        try:
            self._producer.flush(timeout=self._timeout_s)
        except KafkaTimeoutError as exc:
            raise ReindexError(
                "Kafka did not acknowledge the dead letters", retriable=True
            ) from exc
        if self._failures:
            raise ReindexError(
                f"{len(self._failures)} dead letters were not delivered: {self._failures[0]}",
                retriable=True,
            )

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None


def _kafka_timeouts(settings: Settings) -> dict[str, int]:
    session_ms = int(settings.kafka.session_timeout_s * 1000)
    return {
        "session_timeout_ms": session_ms,
        "heartbeat_interval_ms": max(500, min(3000, session_ms // 4)),
    }


def open_consumer(settings: Settings, group: str, batch_size: int) -> KafkaConsumer:
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    kafka = settings.kafka
    connection = KafkaConnection(kafka)
    try:
        return KafkaConsumer(
            client_id="crossfeed-reindex",
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=batch_size,
            **_kafka_timeouts(settings),
            **connection.kafka_python(KafkaConsumer, timeout_s=10.0),
        )
    except KafkaError as exc:
        raise ReindexError(
            f"cannot reach Kafka at {connection.bootstrap}: {exc}", retriable=True
        ) from exc


def open_producer(settings: Settings) -> KafkaProducer:
    from kafka import KafkaProducer

    return KafkaProducer(
        client_id="crossfeed-reindex",
        acks="all",
        linger_ms=5,
        max_request_size=PRODUCER_MAX_REQUEST_BYTES,
        max_block_ms=30_000,
        **KafkaConnection(settings.kafka).kafka_python(KafkaProducer, timeout_s=10.0),
    )


class CatchUpPoller:
    """Polls batches until caught up (or, with ``follow``, until stopped)."""

    def __init__(
        self,
        consumer: KafkaConsumer,
        topic: str,
        follow: bool,
        idle_s: float,
        join_timeout_s: float,
    ) -> None:
        self.consumer = consumer
        self.topic = topic
        self.follow = follow
        self.idle_s = idle_s
        self.join_timeout_s = join_timeout_s
        self._end: dict[Any, int] | None = None

    def start(self) -> dict[Any, int]:
        """Check the topic and subscribe; the end offsets of its partitions as seen now."""
        from kafka import TopicPartition
        from kafka.errors import KafkaError

        try:
            partitions = self.consumer.partitions_for_topic(self.topic)
            if not partitions:
                raise ReindexError(f"topic {self.topic} does not exist")
            self.consumer.subscribe([self.topic])
        except KafkaError as exc:
            raise ReindexError(f"cannot subscribe to {self.topic}: {exc}", retriable=True) from exc
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        try:
            self._end = dict(self.consumer.end_offsets(tps))
        except Exception as exc:  # then the idle guard alone decides
            log.warning("cannot read end offsets of %s (%s); relying on --idle-s", self.topic, exc)
            self._end = {}
        return self._end

    def run(
        self,
        process: Callable[[list[bytes | None]], None],
        stop: threading.Event,
        progress: bool,
    ) -> bool:
        """Returns True when ``stop`` ended the run before it caught up."""
        from kafka.errors import KafkaError
        from tqdm import tqdm

        try:
            end = self._end if self._end is not None else self.start()
            with tqdm(desc=f"reindex {self.topic}", unit="post", disable=not progress) as bar:
                started = last_record = time.monotonic()
                sized = False
                while not stop.is_set():
                    batches = self.consumer.poll(timeout_ms=500)
                    values = [r.value for records in batches.values() for r in records]
                    now = time.monotonic()
                    if values:
                        process(values)
                        bar.update(len(values))
                        last_record = now
                    assigned = self.consumer.assignment()
                    if not sized and assigned and not self.follow:
                        bar.total = bar.n + self._remaining(assigned, end)
                        sized = True
                    if self.follow or values:
                        continue
                    if not assigned and now - started > self.join_timeout_s:
                        raise ReindexError(
                            f"no partition of {self.topic} was assigned within "
                            f"{self.join_timeout_s:.0f} s (is another run in the same "
                            "consumer group holding them?)",
                            retriable=True,
                        )
                    if now - last_record >= self.idle_s and self._caught_up(assigned, end):
                        return False
        except KafkaError as exc:
            raise ReindexError(f"Kafka failed while reindexing: {exc}", retriable=True) from exc
        return True

    def _remaining(self, assigned: set[Any], end: dict[Any, int]) -> int:
        return sum(max(0, end.get(tp, 0) - self.consumer.position(tp)) for tp in assigned)

    def _caught_up(self, assigned: set[Any], end: dict[Any, int]) -> bool:
        return bool(assigned) and all(
            self.consumer.position(tp) >= end.get(tp, 0) for tp in assigned
        )
