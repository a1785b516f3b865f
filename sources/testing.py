"""A sink for unit tests (the replay servers for the services live in ``sources.replay``)."""

from __future__ import annotations

from crossfeed.core.schema import DeadLetter, Post
from crossfeed.sources.base import PostSink


class RecordingSink(PostSink):
    """Keeps what a connector produced, in order: ``("post", Post)``, ``("tombstone", id)``,
    ``("deadletter", DeadLetter)``; ``flushes`` counts flush calls."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, object]] = []
        self.flushes = 0
        self.closed = False

    def send_post(self, post: Post) -> None:
        self.messages.append(("post", post))

    def send_tombstone(self, post_id: str) -> None:
        self.messages.append(("tombstone", post_id))

    def send_deadletter(self, letter: DeadLetter) -> None:
        self.messages.append(("deadletter", letter))

    def flush(self, timeout_s: float = 30.0) -> None:
        self.flushes += 1

    def close(self) -> None:
        self.closed = True

    def posts(self) -> list[Post]:
        return [m for kind, m in self.messages if kind == "post"]  # type: ignore[misc]

    def tombstones(self) -> list[str]:
        return [m for kind, m in self.messages if kind == "tombstone"]  # type: ignore[misc]

    def deadletters(self) -> list[DeadLetter]:
        return [m for kind, m in self.messages if kind == "deadletter"]  # type: ignore[misc]
