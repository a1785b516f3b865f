"""Test doubles of the streams' seams (unit tests and dry runs; never the workers)."""

from __future__ import annotations


class RecordingPublisher:
    """A :class:`Publisher` that keeps messages in memory (unit tests, dry runs)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str | None, bytes | None]] = []

    async def publish(self, topic: str, key: str | None, value: bytes | None) -> None:
        self.messages.append((topic, key, value))

    def on(self, topic: str) -> list[tuple[str | None, bytes | None]]:
        return [(k, v) for t, k, v in self.messages if t == topic]
