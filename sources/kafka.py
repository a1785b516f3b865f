"""The production sink: a kafka-python producer built from the one Kafka connection config.

Posts go to ``posts.raw`` keyed by post id (JSON, as ``crossfeed produce`` sends
them), tombstones to the same topic with the post's key and a null value, dead
letters to ``posts.deadletter``. ``acks=all`` and the idempotent producer: what
:meth:`KafkaPostSink.flush` returns from is on every in-sync replica.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from crossfeed.core.kafka import MAX_MESSAGE_BYTES, PRODUCER_MAX_REQUEST_BYTES, KafkaConnection
from crossfeed.core.schema import DeadLetter, Post
from crossfeed.core.settings import KafkaSettings
from crossfeed.sources.base import PostSink
from crossfeed.sources.exceptions import DeliveryError

log = logging.getLogger(__name__)


class KafkaPostSink(PostSink):
    def __init__(
        self,
        settings: KafkaSettings,
        *,
        client_id: str = "crossfeed-source",
        timeout_s: float = 30.0,
        producer: Any = None,
    ) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        self.topic = settings.topic_raw
        self.deadletter_topic = settings.topic_deadletter
        connection = KafkaConnection(settings)
        try:
            self._producer = producer or KafkaProducer(
                client_id=client_id,
                acks="all",
                linger_ms=20,
                max_request_size=PRODUCER_MAX_REQUEST_BYTES,
                request_timeout_ms=15_000,
                delivery_timeout_ms=max(int(timeout_s * 1000), 15_020),
                max_block_ms=int(timeout_s * 1000),
                **connection.kafka_python(KafkaProducer, timeout_s=timeout_s),
            )
        except KafkaError as exc:
            raise DeliveryError(f"cannot reach Kafka at {connection.bootstrap}: {exc}") from exc
        self._failures: list[BaseException] = []
        self._lock = threading.Lock()
        self.sent = 0

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self._failures.append(exc)

    def _send(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        future = self._producer.send(topic, key=key, value=value)
        future.add_errback(self._failed)
        self.sent += 1

    def send_post(self, post: Post) -> None:
        value = post.model_dump_json(exclude_none=True).encode("utf-8")
        if len(value) > MAX_MESSAGE_BYTES:  # cannot happen for the services' post sizes
            self.send_deadletter(
                DeadLetter.from_bytes(
                    "validate", f"post is {len(value)} bytes, over the limit", value[:4096], post.id
                )
            )
            return
        self._send(self.topic, post.id.encode("utf-8"), value)

    def send_tombstone(self, post_id: str) -> None:
        self._send(self.topic, post_id.encode("utf-8"), None)

    def send_deadletter(self, letter: DeadLetter) -> None:
        value = letter.model_dump_json().encode("utf-8")
        if len(value) > MAX_MESSAGE_BYTES:
            letter = letter.model_copy(update={"payload": letter.payload[:4096]})
            value = letter.model_dump_json().encode("utf-8")
        key = letter.post_id.encode("utf-8") if letter.post_id else None
        self._send(self.deadletter_topic, key, value)

    def flush(self, timeout_s: float = 30.0) -> None:
        from kafka.errors import KafkaTimeoutError

        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaTimeoutError as exc:
            raise DeliveryError(f"Kafka did not acknowledge within {timeout_s:.0f} s") from exc
        with self._lock:
            failures, self._failures = self._failures, []
        if failures:
            raise DeliveryError(f"{len(failures)} messages were not delivered: {failures[0]}")

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._producer.close(timeout=5)
