"""The *normalize* stage: ``posts.raw`` -> ``posts.clean``."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import ValidationError

from crossfeed.core.breaker import Outage
from crossfeed.core.kafka import MAX_MESSAGE_BYTES
from crossfeed.core.schema import MAX_ID_CHARS, CleanPost, Post
from crossfeed.core.settings import KafkaSettings
from crossfeed.core.text import clean_text_and_hashtags, content_hash, merge_hashtags
from crossfeed.exceptions import CircuitOpenError
from crossfeed.indexer.erasure import Eraser
from crossfeed.streams.dedupe import DedupeStore
from crossfeed.streams.delivery import (
    DeadLetters,
    Publisher,
    describe_validation_error,
    retry_forever,
)
from crossfeed.streams.metrics import WorkerMetrics
from crossfeed.streams.trends import TrendsStep, repost_observation

log = logging.getLogger(__name__)

T = TypeVar("T")
RawRecord = tuple[bytes | None, datetime | None, str | None]  # value, produced at, key


class NormalizeStage:
    """``posts.raw`` -> ``posts.clean``: parse, validate, clean, detect reposts.

    Reposts (same content hash as an earlier post) are still forwarded, with
    ``duplicate_of`` set, so the record of them is never lost; the embed stage
    does not embed them (the original's vectors already answer queries).
    A post with nothing left to embed after cleaning (only links or mentions)
    is dead-lettered rather than silently dropped.

    ``outage``: the circuit breaker around Redis. Given one, the stage keeps going while
    Redis is away: the repost check is skipped (the post goes on as an original, counted
    in ``crossfeed_repost_checks_skipped`` and logged once per outage) and so is the
    erasure check (the index stage owes it and makes it when Redis is back). A tombstone
    still waits for Redis: an erasure is never skipped. Without one, every Redis call is
    retried until it passes (the stage waits for Redis).
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
        eraser: Eraser | None = None,
        trends: TrendsStep | None = None,
        outage: Outage | None = None,
    ) -> None:
        self._eraser = eraser
        self._trends = trends
        self._outage = outage
        self._skipping_since: int | None = None  # the outage whose skips were logged
        self._dedupe = dedupe
        self._publisher = publisher
        self._topic_clean = topics.topic_clean
        self._max_bytes = max_message_bytes
        self._dead = DeadLetters(publisher, topics.topic_deadletter, metrics, max_message_bytes)
        self._metrics = metrics
        self._clock = clock

    async def handle(
        self, raw: bytes | None, produced_at: datetime | None = None, key: str | None = None
    ) -> str:
        """Process one ``posts.raw`` record (see :meth:`handle_batch`); its outcome."""
        [outcome] = await self.handle_batch([(raw, produced_at, key)])
        return outcome

    async def handle_batch(self, records: Sequence[RawRecord]) -> list[str]:
        """Process ``posts.raw`` records ``(value, produced_at, key)`` in order; one outcome
        each: "clean", "duplicate", "erased", "dropped" (a post erased earlier: erase wins)
        or "deadletter".

        A record with a key and no value is a tombstone (a connector saw the post deleted,
        or ``DELETE /v1/posts/{id}`` asked): the post is erased everywhere, its repost
        claim released, and a tombstone written to the compacted ``posts.clean``.
        ``produced_at``: the record's Kafka timestamp, carried along for freshness.

        The posts between two tombstones share one erasure check and one repost check
        (one Redis round trip each, instead of three round trips per post, which had paced
        text ingest), with the same outcomes as one record at a time.
        """
        outcomes: list[str] = []
        group: list[tuple[int, Post, bytes, datetime | None]] = []
        for raw, produced_at, key in records:
            self._metrics.posts_in.labels(stage="normalize").inc()
            outcomes.append("deadletter")
            if raw is None and key and self._eraser is not None:
                await self._settle(group, outcomes)
                outcomes[-1] = await self._erase(key)
                continue
            payload = raw or b""
            post = await self._parse(payload)
            if post is not None:
                group.append((len(outcomes) - 1, post, payload, produced_at))
        await self._settle(group, outcomes)
        return outcomes

    async def _settle(
        self, group: list[tuple[int, Post, bytes, datetime | None]], outcomes: list[str]
    ) -> None:
        """Erasure check, clean, repost check and publish for parsed posts; empties ``group``."""
        if not group:
            return
        items, erased = list(group), set[str]()
        group.clear()
        if self._eraser is not None:
            ledger = self._eraser.ledger
            ids = [post.id for _, post, _, _ in items]
            nothing: set[str] = set()  # Redis away: the index stage owes the check
            erased = (
                await self._redis(lambda: ledger.erased(ids), "erasure check", nothing) or set()
            )
        cleaned: list[tuple[int, Post, bytes, datetime | None, str, list[str], str]] = []
        for at, post, payload, produced_at in items:
            if post.id in erased:
                self._metrics.erased_dropped.inc()
                log.info("post %s was erased before it arrived; dropped", post.id)
                outcomes[at] = "dropped"
                continue
            try:
                text, text_tags = clean_text_and_hashtags(post.text)
                hashtags = merge_hashtags(text_tags, post.tags)
                digest = content_hash(text, hashtags, post.media)
            except ValueError as exc:  # bad inline base64
                await self._dead.send("validate", str(exc), payload, post.id)
                continue
            except Exception as exc:  # a cleaning bug must cost one post, not the partition
                log.exception("cleaning post %s failed", post.id)
                reason = f"internal error while cleaning: {type(exc).__name__}: {exc}"
                await self._dead.send("normalize", reason, payload, post.id)
                continue
            if not text and not hashtags and not post.media:
                reason = "nothing left to index after cleaning (only links/mentions)"
                await self._dead.send("normalize", reason, payload, post.id)
                continue
            cleaned.append((at, post, payload, produced_at, text, hashtags, digest))
        if not cleaned:
            return
        claims = [(digest, post.id) for _, post, _, _, _, _, digest in cleaned]
        owners = await self._redis(lambda: self._dedupe.claim_many(claims), "repost check")
        if owners is None:
            self._metrics.repost_checks_skipped.inc(len(cleaned))
        for i, (at, post, payload, produced_at, text, hashtags, digest) in enumerate(cleaned):
            owner = owners[i] if owners is not None else post.id
            outcomes[at] = await self._publish(
                post, payload, produced_at, text, hashtags, digest, owner
            )

    async def _publish(
        self,
        post: Post,
        payload: bytes,
        produced_at: datetime | None,
        text: str,
        hashtags: list[str],
        digest: str,
        owner: str,
    ) -> str:
        duplicate_of = owner if owner != post.id else None
        clean = CleanPost(
            post=post,
            clean_text=text,
            hashtags=hashtags,
            content_hash=digest,
            duplicate_of=duplicate_of,
            received_at=self._clock(),
            produced_at=produced_at,
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
            self._observe_repost(clean)
            log.debug("post %s is a repost of %s; forwarded, not embedded", post.id, duplicate_of)
            return "duplicate"
        return "clean"

    def _observe_repost(self, clean: CleanPost) -> None:
        """A repost is attention for its original: to the trends step (never blocks)."""
        if self._trends is None:
            return
        try:
            self._trends.submit([repost_observation(clean)])
        except Exception as exc:  # trends are optional: a bug here must not cost the post
            self._metrics.trends_errors.inc()
            log.warning("trends step: repost %s not observed: %s", clean.post.id, exc)

    async def _redis(
        self, call: Callable[[], Awaitable[T]], what: str, fallback: T | None = None
    ) -> T | None:
        """``call()``: retried until it passes without a breaker; with one, ``fallback``
        while Redis is away (logged once per outage)."""
        outage = self._outage
        if outage is None:
            return await retry_forever(call, what=what)
        try:
            return await outage.attempt(call)
        except CircuitOpenError as exc:
            if self._skipping_since != outage.outages:
                self._skipping_since = outage.outages
                log.warning(
                    "Redis is away (%s): posts go on without repost or erasure checks, "
                    "as originals, until it is back",
                    exc,
                )
            return fallback

    async def _erase(self, post_id: str) -> str:
        eraser = self._eraser
        assert eraser is not None
        if len(post_id) > MAX_ID_CHARS:
            await self._dead.send("validate", "tombstone key is not a post id", b"")
            return "deadletter"
        await retry_forever(lambda: eraser.erase(post_id, by="tombstone"), what="erasure")
        await retry_forever(lambda: self._dedupe.forget(post_id), what="repost claim release")
        await self._publisher.publish(self._topic_clean, post_id, None)
        self._metrics.erased.inc()
        return "erased"

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
