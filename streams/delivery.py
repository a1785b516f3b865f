"""Delivery, shared by every stage: where they publish, how they retry, dead letters.

The stages know nothing about faust: they take raw message values and publish
through a :class:`Publisher`, so unit tests drive them directly or through
faust's in-memory agent harness, and the faust wiring (``app.py``) stays thin.

Delivery contract of every stage: a message is acknowledged only after
everything it produced (clean post, vectors, dead letter, index rows) has been
handed over, so a crash replays it (at-least-once); replays are harmless because
repost claims are keyed by post id and index upserts by row id.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from crossfeed.core.kafka import MAX_MESSAGE_BYTES
from crossfeed.core.schema import DeadLetter, Stage
from crossfeed.exceptions import is_retriable
from crossfeed.live.activity import reason_label
from crossfeed.streams.metrics import WorkerMetrics

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_REASON_CHARS = 2000


class Publisher(Protocol):
    """Where stages write: one call per message, returns once the message is handed over."""

    async def publish(self, topic: str, key: str | None, value: bytes | None) -> None:
        """``value`` None is a tombstone (compaction deletes the key)."""


async def retry_forever(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    base_s: float = 0.2,
    cap_s: float = 10.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Await ``call()`` until it succeeds; retriable errors back off, others propagate.

    There is no attempt limit on purpose: a retriable error means an engine is
    down, and giving up would drop the message. A stopping worker cancels the
    wait, and the unacknowledged message is replayed after restart.
    """
    delay = base_s
    attempt = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            if not is_retriable(exc):
                raise
            attempt += 1
            log.warning("%s failed (attempt %d), retrying in %.1fs: %s", what, attempt, delay, exc)
            await sleep(delay * (0.5 + random.random()))
            delay = min(cap_s, delay * 2)


def describe_validation_error(exc: ValidationError, limit: int = 5) -> str:
    """``"created_at: Input should be a valid datetime; id: Field required"``."""
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "(post)"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    more = len(exc.errors()) - limit
    if more > 0:
        parts.append(f"... and {more} more")
    return "; ".join(parts)


M = TypeVar("M", bound=BaseModel)


def _encodable(text: str) -> str:
    """``text`` with anything UTF-8 cannot encode (lone surrogates) replaced by ``?``."""
    return text.encode("utf-8", errors="replace").decode("utf-8")


class DeadLetters:
    """Writes :class:`DeadLetter` records and counts them, one place for every stage."""

    def __init__(
        self,
        publisher: Publisher,
        topic: str,
        metrics: WorkerMetrics,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self._publisher = publisher
        self._topic = topic
        self._metrics = metrics
        self._max_bytes = max_message_bytes

    async def send(
        self, stage: Stage, reason: str, payload: bytes | None, post_id: str | None = None
    ) -> None:
        # The letter must go out whatever it carries: text that is not valid Unicode (a
        # lone surrogate from a JSON escape) would fail to encode, as key or as JSON.
        reason = _encodable(reason[:MAX_REASON_CHARS])
        post_id = None if post_id is None else _encodable(post_id)
        payload = payload or b""
        value = self._encode(stage, reason, payload, post_id)
        log.warning("dead-lettered post %s at %s: %s", post_id or "?", stage, reason)
        await self._publisher.publish(self._topic, post_id, value)
        self._metrics.deadletters.labels(stage=stage).inc()
        self._metrics.deadletter_reasons.labels(stage=stage, reason=reason_label(reason)).inc()

    async def parse(self, model: type[M], payload: bytes, stage: Stage, what: str) -> M | None:
        """``payload`` as ``model``; None after dead-lettering it when it does not validate."""
        try:
            return model.model_validate_json(payload)
        except ValidationError as exc:
            await self.send(stage, f"invalid {what}: {describe_validation_error(exc)}", payload)
            return None

    def _encode(self, stage: Stage, reason: str, payload: bytes, post_id: str | None) -> bytes:
        """The letter as JSON; a payload too big for one message is cut (and the cut noted)."""
        keep = len(payload)
        while True:
            note = (
                "" if keep == len(payload) else f" [payload cut to {keep} of {len(payload)} bytes]"
            )
            letter = DeadLetter.from_bytes(stage, reason + note, payload[:keep], post_id=post_id)
            value = letter.model_dump_json().encode()
            if len(value) <= self._max_bytes or keep == 0:
                return value
            keep = keep // 2
