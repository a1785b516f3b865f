"""Tombstones on ``posts.raw``: how the API tells the stream a post is erased."""

from __future__ import annotations

from typing import Protocol

import anyio

from crossfeed.core.kafka import KafkaConnection
from crossfeed.core.settings import KafkaSettings
from crossfeed.exceptions import CrossfeedError


class TombstoneError(CrossfeedError):
    """The tombstone could not be written (the broker is unreachable)."""

    retriable = True


class Tombstones(Protocol):
    async def send(self, post_id: str) -> None:
        """Write the post's tombstone to ``posts.raw``; returns once the broker has it."""

    async def close(self) -> None: ...


class MemoryTombstones:
    """Tombstones recorded in process (the in-memory stand-in, for tests and fakes);
    ``fail=True`` answers like an unreachable broker."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[str] = []
        self.fail = fail

    async def send(self, post_id: str) -> None:
        if self.fail:
            raise TombstoneError("cannot write the tombstone to Kafka: broker down")
        self.sent.append(post_id)

    async def close(self) -> None:
        pass


class KafkaTombstones:
    """Tombstones through a kafka-python producer made on first use (blocking calls run in
    a worker thread)."""

    def __init__(self, settings: KafkaSettings, timeout_s: float = 10.0) -> None:
        self._settings = settings
        self._timeout_s = timeout_s
        self._producer: object | None = None
        self._lock = anyio.Lock()

    def _make(self) -> object:
        from kafka import KafkaProducer

        return KafkaProducer(
            client_id="crossfeed-api-erasure",
            acks="all",
            max_block_ms=int(self._timeout_s * 1000),
            **KafkaConnection(self._settings).kafka_python(
                KafkaProducer, timeout_s=self._timeout_s
            ),
        )

    async def send(self, post_id: str) -> None:
        from kafka.errors import KafkaError

        def write(producer: object) -> None:
            future = producer.send(  # type: ignore[attr-defined]
                self._settings.topic_raw, key=post_id.encode("utf-8"), value=None
            )
            future.get(timeout=self._timeout_s)

        try:
            async with self._lock:
                if self._producer is None:
                    self._producer = await anyio.to_thread.run_sync(self._make)
            await anyio.to_thread.run_sync(write, self._producer)
        except KafkaError as exc:
            raise TombstoneError(f"cannot write the tombstone to Kafka: {exc}") from exc

    async def close(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await anyio.to_thread.run_sync(lambda: producer.close(timeout=5))  # type: ignore[attr-defined]
