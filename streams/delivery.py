"""Stage logic shared by the agents, and the *normalize* stage.

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
import json
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from crossfeed.core.kafka import MAX_MESSAGE_BYTES
from crossfeed.core.schema import MAX_ID_CHARS, CleanPost, DeadLetter, Post, Stage
from crossfeed.core.settings import KafkaSettings
from crossfeed.core.text import clean_text_and_hashtags, content_hash, merge_hashtags
from crossfeed.exceptions import CrossfeedError
from crossfeed.streams.dedupe import DedupeStore
from crossfeed.streams.metrics import WorkerMetrics

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_REASON_CHARS = 2000


class Publisher(Protocol):
    """Where stages write: one call per message, returns once the message is handed over."""

    async def publish(self, topic: str, key: str | None, value: bytes) -> None: ...


class RecordingPublisher:
    """A :class:`Publisher` that keeps messages in memory (unit tests, dry runs)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str | None, bytes]] = []

    async def publish(self, topic: str, key: str | None, value: bytes) -> None:
        self.messages.append((topic, key, value))

    def on(self, topic: str) -> list[tuple[str | None, bytes]]:
        return [(k, v) for t, k, v in self.messages if t == topic]


def is_retriable(exc: BaseException) -> bool:
    """Whether trying the same call again may succeed."""
    if isinstance(exc, CrossfeedError):
        return exc.retriable
    return isinstance(exc, ConnectionError | TimeoutError)


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
        reason = reason[:MAX_REASON_CHARS]
        payload = payload or b""
        value = self._encode(stage, reason, payload, post_id)
        log.warning("dead-lettered post %s at %s: %s", post_id or "?", stage, reason)
        await self._publisher.publish(self._topic, post_id, value)
        self._metrics.deadletters.labels(stage=stage).inc()

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


# --------------------------------------------------------------------------- normalize


class NormalizeStage:
    """``posts.raw`` -> ``posts.clean``: parse, validate, clean, detect reposts.

    Reposts (same content hash as an earlier post) are still forwarded, with
    ``duplicate_of`` set, so the record of them is never lost; the embed stage
    does not embed them (the original's vectors already answer queries).
    A post with nothing left to embed after cleaning (only links or mentions)
    is dead-lettered rather than silently dropped.
    """

    def __init__(
        self,
        *,
        dedupe: DedupeStore,
        publisher: Publisher,
        topics: KafkaSettings,
        metrics: WorkerMetrics,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self._dedupe = dedupe
        self._publisher = publisher
        self._topic_clean = topics.topic_clean
        self._max_bytes = max_message_bytes
        self._dead = DeadLetters(publisher, topics.topic_deadletter, metrics, max_message_bytes)
        self._metrics = metrics
        self._clock = clock

    async def handle(self, raw: bytes | None) -> str:
        """Process one ``posts.raw`` value; returns "clean", "duplicate" or "deadletter"."""
        self._metrics.posts_in.labels(stage="normalize").inc()
        payload = raw or b""
        post_or_none = await self._parse(payload)
        if post_or_none is None:
            return "deadletter"
        post = post_or_none
        try:
            text, text_tags = clean_text_and_hashtags(post.text)
            hashtags = merge_hashtags(text_tags, post.tags)
            digest = content_hash(text, hashtags, post.media)
        except ValueError as exc:  # bad inline base64
            await self._dead.send("validate", str(exc), payload, post.id)
            return "deadletter"
        except Exception as exc:  # a cleaning bug must cost one post, not the partition
            log.exception("cleaning post %s failed", post.id)
            reason = f"internal error while cleaning: {type(exc).__name__}: {exc}"
            await self._dead.send("normalize", reason, payload, post.id)
            return "deadletter"
        if not text and not hashtags and not post.media:
            reason = "nothing left to index after cleaning (only links/mentions)"
            await self._dead.send("normalize", reason, payload, post.id)
            return "deadletter"
        owner = await retry_forever(
            lambda: self._dedupe.claim(digest, post.id), what="repost check"
        )
        duplicate_of = owner if owner != post.id else None
        clean = CleanPost(
            post=post,
            clean_text=text,
            hashtags=hashtags,
            content_hash=digest,
            duplicate_of=duplicate_of,
            received_at=self._clock(),
        )
        value = clean.model_dump_json().encode()
        if len(value) > self._max_bytes:
            reason = f"clean post is {len(value)} bytes, over the {self._max_bytes}-byte limit"
            await self._dead.send("normalize", reason, payload, post.id)
            return "deadletter"
        await self._publisher.publish(self._topic_clean, post.id, value)
        self._metrics.posts_out.labels(stage="normalize").inc()
        if duplicate_of is not None:
            self._metrics.duplicates.inc()
            log.debug("post %s is a repost of %s; forwarded, not embedded", post.id, duplicate_of)
            return "duplicate"
        return "clean"

    async def _parse(self, payload: bytes) -> Post | None:
        if not payload.strip():
            await self._dead.send("parse", "empty message", payload)
            return None
        try:
            obj = json.loads(payload)
        except (ValueError, RecursionError) as exc:  # bad UTF-8/JSON, absurd nesting or numbers
            await self._dead.send("parse", f"malformed JSON: {exc}", payload)
            return None
        if not isinstance(obj, dict):
            await self._dead.send(
                "validate", f"expected a JSON object, got {type(obj).__name__}", payload
            )
            return None
        raw_id = obj.get("id")
        post_id = raw_id[:MAX_ID_CHARS] if isinstance(raw_id, str) and raw_id else None
        try:
            return Post.model_validate(obj)
        except ValidationError as exc:
            await self._dead.send("validate", describe_validation_error(exc), payload, post_id)
            return None
