"""The *embed* stage: ``posts.clean`` micro-batches -> ``posts.vectors``.

Per post: one text vector (clean text + hashtags; none when both are empty),
one vector per image, one per video (its sampled frames pooled by the
embedder). Reposts (``duplicate_of`` set) are skipped: the original's vectors
already answer queries, and the repost stays on ``posts.clean``. Each record
carries the post's original text as its display text and the normalised
hashtags as its tags. With a :class:`~crossfeed.streams.suggest.TagSuggestStep`
the media items of untagged posts also carry ``suggested_tags``.

Fetching, decoding and embedding are blocking, so they run in a thread pool:
the event loop keeps heart-beating to the broker however long a batch takes. A
post whose media cannot be fetched or decoded is dead-lettered (stage
"decode") before embedding; if embedding the whole batch fails, each post is
retried alone so only the offending one is dead-lettered (stage "embed").

Errors that no post caused never become dead letters: a retriable one (an
engine or device briefly unavailable) is retried with back-off until the call
succeeds, and a configuration error (a model that cannot be loaded, a missing
head version: any crossfeed error that is neither retriable nor about the
input) propagates out of :meth:`EmbedStage.handle_batch`, so the worker stops
and the batch is neither acknowledged nor committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from PIL import Image

from crossfeed.core.schema import CleanPost, Modality, VectorRecord
from crossfeed.core.settings import KafkaSettings
from crossfeed.core.text import embedding_text
from crossfeed.encoders.base import Embedder
from crossfeed.encoders.moments import Moment, segment_moments
from crossfeed.exceptions import CircuitOpenError, CrossfeedError, InvalidInputError
from crossfeed.live.thumbs import Thumbnail, make_thumbnail
from crossfeed.streams.delivery import DeadLetters, Publisher, retry_forever
from crossfeed.streams.exceptions import MediaError
from crossfeed.streams.hooks import ThumbnailPolicy
from crossfeed.streams.media import (
    DecodeLimits,
    MediaFetcher,
    decode_image_bytes,
    decode_video_bytes,
)
from crossfeed.streams.metrics import WorkerMetrics
from crossfeed.streams.suggest import TagSuggestStep

log = logging.getLogger(__name__)


@dataclass
class PreparedPost:
    """A post with its media decoded, ready for the embedder."""

    clean: CleanPost
    raw: bytes
    text: str  # "" = no text vector
    images: list[tuple[int, str, Image.Image]] = field(default_factory=list)  # item, ref, image
    videos: list[tuple[int, str, list[Image.Image]]] = field(default_factory=list)
    moments: dict[int, list[Moment]] = field(default_factory=dict)  # video item -> its moments
    thumbs: list[Thumbnail] = field(default_factory=list)


@dataclass
class EmbedReport:
    """What one micro-batch did; the agent yields it (tests and logs read it)."""

    posts: int = 0
    duplicates_skipped: int = 0
    deadlettered: int = 0
    vectors: int = 0
    post_ids: list[str] = field(default_factory=list)


class EmbedStage:
    """Embeds micro-batches of clean posts and publishes one :class:`VectorRecord` per item."""

    def __init__(
        self,
        *,
        embedder: Embedder | Callable[[], Embedder],
        fetcher: MediaFetcher,
        limits: DecodeLimits,
        publisher: Publisher,
        topics: KafkaSettings,
        metrics: WorkerMetrics,
        executor: Executor | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        suggester: TagSuggestStep | None = None,
        moment_s: float = 0.0,
        thumbnails: ThumbnailPolicy | None = None,
    ) -> None:
        self._embedder: Embedder | None = embedder if isinstance(embedder, Embedder) else None
        self._embedder_factory = None if isinstance(embedder, Embedder) else embedder
        self._fetcher = fetcher
        self._limits = limits
        self._publisher = publisher
        self._topic_vectors = topics.topic_vectors
        self._dead = DeadLetters(publisher, topics.topic_deadletter, metrics)
        self._metrics = metrics
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(4, thread_name_prefix="crossfeed-embed")
        self._clock = clock
        self._suggester = suggester
        self._moment_s = moment_s  # 0 = whole videos only
        self._thumbs = thumbnails

    def close(self) -> None:
        if self._suggester is not None:
            self._suggester.close()
        if self._own_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._fetcher.close()

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def embedder(self) -> Embedder:
        """The embedder, loaded on first use (model loading is slow and blocking).

        A retriable loader error is retried with back-off; any other one propagates.
        """
        if self._embedder is None:
            factory = self._embedder_factory
            assert factory is not None
            loaded: Embedder = await retry_forever(
                lambda: self._run(factory), what="loading the embedder"
            )
            self._embedder = loaded
            return loaded
        return self._embedder

    # ------------------------------------------------------------------ batch

    async def handle_batch(self, values: Sequence[bytes | None]) -> EmbedReport:
        """Embed one micro-batch and publish its vector records and dead letters.

        Returns once everything was handed to the publisher. Raises when the embedder
        cannot be loaded or run for a reason no post caused (see :func:`_stops_stage`);
        the caller must then neither acknowledge nor commit the batch. No post is
        dead-lettered for such an error, and no vector is published; posts already
        dead-lettered for their own faults (parse, decode) are sent again on replay.
        """
        report = EmbedReport(posts=len(values))
        self._metrics.posts_in.labels(stage="embed").inc(len(values))
        posts: list[tuple[CleanPost, bytes]] = []
        for value in values:
            if value is None:  # a tombstone on posts.clean: an erased post, nothing to embed
                continue
            payload = value
            clean = await self._dead.parse(CleanPost, payload, "embed", "clean post")
            if clean is None:
                report.deadlettered += 1
                continue
            if clean.duplicate_of is not None:
                report.duplicates_skipped += 1
                continue
            posts.append((clean, payload))
        if not posts:
            return report

        results = await asyncio.gather(
            *(self._run(self._prepare, clean, payload) for clean, payload in posts),
            return_exceptions=True,
        )
        prepared: list[PreparedPost] = []
        for (clean, payload), result in zip(posts, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result  # cancellation: the batch is replayed after restart
                await self._dead.send("decode", str(result), payload, clean.post.id)
                report.deadlettered += 1
            elif result.text or result.images or result.videos:
                prepared.append(result)
        if not prepared:
            return report

        embedder = await self.embedder()
        records = await self._embed(embedder, prepared, report)
        # Thumbnails before the vectors: a post is searchable only after the index stage
        # took its vectors, and by then its pictures are there to show.
        await self._store_thumbnails([t for p in prepared for t in p.thumbs])
        for record in records:
            await self._publisher.publish(
                self._topic_vectors, record.post_id, record.model_dump_json().encode()
            )
        report.vectors = len(records)
        report.post_ids = sorted({r.post_id for r in records})
        self._metrics.posts_out.labels(stage="embed").inc(len(report.post_ids))
        return report

    def _prepare(self, clean: CleanPost, payload: bytes) -> PreparedPost:
        """Fetch and decode every media item (blocking; runs in the pool)."""
        out = PreparedPost(
            clean=clean, raw=payload, text=embedding_text(clean.clean_text, clean.hashtags)
        )
        for number, item in enumerate(clean.post.media, start=1):
            ref = item.reference()
            try:
                data = self._fetcher.fetch(item)
                if item.kind == "image":
                    out.images.append((number, ref, decode_image_bytes(data, self._limits)))
                else:
                    timed = decode_video_bytes(data, self._limits)
                    out.videos.append((number, ref, [frame for _, frame in timed]))
                    out.moments[number] = segment_moments([t for t, _ in timed], self._moment_s)
            except Exception as exc:  # any failure of one item sinks the post, never the batch
                raise MediaError(f"media {number} ({item.kind}, {ref}): {exc}") from exc
        if self._thumbs is not None and self._thumbs.skipping:  # Redis away: none made
            self._metrics.thumbnails_skipped.inc(len(out.images) + len(out.videos))
        elif self._thumbs is not None:
            out.thumbs = self._make_thumbnails(out)
        return out

    def _make_thumbnails(self, post: PreparedPost) -> list[Thumbnail]:
        """A thumbnail per image, per video (its middle frame) and per video moment (the
        moment's middle frame). Best effort: a picture that will not shrink costs nothing
        but its thumbnail."""
        policy = self._thumbs
        assert policy is not None
        post_id = post.clean.post.id
        wanted: list[tuple[int, int | None, Image.Image]] = [
            (n, None, im) for n, _, im in post.images
        ]
        for number, _, frames in post.videos:
            if not frames:
                continue
            wanted.append((number, None, frames[len(frames) // 2]))
            for moment in post.moments.get(number, []):
                if moment.frames:
                    middle = moment.frames[len(moment.frames) // 2]
                    wanted.append((number, moment.index, frames[middle]))
        out: list[Thumbnail] = []
        for number, moment_index, image in wanted:
            try:
                jpeg = make_thumbnail(image, max_px=policy.max_px, max_bytes=policy.max_bytes)
            except Exception as exc:
                log.warning("no thumbnail for %s item %d: %s", post_id, number, exc)
                continue
            out.append(Thumbnail(post_id, number, moment_index, jpeg))
        return out

    async def _store_thumbnails(self, thumbs: list[Thumbnail]) -> None:
        policy = self._thumbs
        if policy is None or not thumbs:
            return
        try:
            if policy.outage is None:
                await self._run(policy.writer.put, thumbs)
            else:
                await self._run(policy.outage.call, policy.writer.put, thumbs)
        except CircuitOpenError:
            self._metrics.thumbnails_skipped.inc(len(thumbs))
        except CrossfeedError as exc:  # pictures are never worth holding up the stream
            self._metrics.thumbnails_skipped.inc(len(thumbs))
            log.warning("could not store %d thumbnails: %s", len(thumbs), exc)

    # ------------------------------------------------------------------ embedding

    async def _embed(
        self, embedder: Embedder, prepared: list[PreparedPost], report: EmbedReport
    ) -> list[VectorRecord]:
        """The vector records of ``prepared``.

        Retriable errors are retried until the call succeeds; an error that stops the
        stage (:func:`_stops_stage`) propagates. Any other failure is blamed on the
        posts: a batch is retried post by post, and a post that fails alone is
        dead-lettered (stage "embed", counted in ``report``).
        """
        try:
            return await retry_forever(
                lambda: self._run(self._embed_posts, embedder, prepared),
                what=f"embedding {len(prepared)} post(s)",
            )
        except Exception as exc:
            if _stops_stage(exc):
                raise
            if len(prepared) == 1:
                post = prepared[0]
                await self._dead.send(
                    "embed", f"embedding failed: {exc}", post.raw, post.clean.post.id
                )
                report.deadlettered += 1
                return []
            log.warning(
                "embedding a batch of %d failed (%s); retrying post by post", len(prepared), exc
            )
        records: list[VectorRecord] = []
        for post in prepared:
            records.extend(await self._embed(embedder, [post], report))
        return records

    def _embed_posts(self, embedder: Embedder, prepared: list[PreparedPost]) -> list[VectorRecord]:
        """One embedder call per modality for the whole batch, one per video (its frames
        and moments share one tower pass). Blocking; runs in the pool."""
        texts = [(p, 0, None, p.text) for p in prepared if p.text]
        images = [(p, n, ref, img) for p in prepared for n, ref, img in p.images]
        videos = [(p, n, ref, frames) for p in prepared for n, ref, frames in p.videos]
        records: list[VectorRecord] = []
        now = self._clock()
        jobs: list[tuple[Modality, list[Any]]] = [
            ("text", texts),
            ("image", images),
            ("video", videos),
        ]
        for modality, items in jobs:
            if not items:
                continue
            suggest = modality != "text" and any(self._wants_tags(x[0]) for x in items)
            started = time.perf_counter()
            vectors, posteriors, moments = self._vectors(embedder, modality, items, suggest)
            self._metrics.embed_batch_seconds.labels(modality=modality).observe(
                time.perf_counter() - started
            )
            for i, ((post, number, ref, _), vector) in enumerate(zip(items, vectors, strict=True)):
                record = self._record(post.clean, number, modality, ref, vector, embedder, now)
                if suggest and self._wants_tags(post):
                    assert self._suggester is not None
                    record.suggested_tags = self._suggester.suggest(
                        record.vector,
                        post_id=record.post_id,
                        modality=modality,
                        model_version=record.model_version,
                        posterior=posteriors[i] if posteriors else None,
                    )
                records.append(record)
                for moment, moment_vector in moments.get(i, []):
                    records.append(
                        record.model_copy(
                            update={
                                "vector": [float(x) for x in moment_vector],
                                "moment": moment.index,
                                "start_s": moment.start_s,
                                "end_s": moment.end_s,
                            }
                        )
                    )
            self._metrics.embedded.labels(modality=modality).inc(len(items))
        return records

    def _wants_tags(self, post: PreparedPost) -> bool:
        return self._suggester is not None and TagSuggestStep.wants(post.clean)

    @staticmethod
    def _vectors(
        embedder: Embedder, modality: Modality, items: list[Any], suggest: bool
    ) -> tuple[np.ndarray, list[dict[str, float]] | None, dict[int, list[tuple[Moment, Any]]]]:
        """(n, dim) item vectors, tag posteriors (only when suggesting with a tag head),
        and per video item index its moments with their vectors."""
        media = [x[3] for x in items]
        posteriors: list[dict[str, float]] | None = None
        moments: dict[int, list[tuple[Moment, Any]]] = {}
        if modality == "text":
            vectors = np.asarray(embedder.embed_texts(media), dtype=np.float32)
        elif modality == "image" and suggest:
            # Same vectors as embed_images, plus the head's tag posterior when it has one.
            vectors, posteriors = embedder.embed_media_with_posterior("image", media)
        elif modality == "image":
            vectors = np.asarray(embedder.embed_images(media), dtype=np.float32)
        else:
            pooled = []
            for i, (post, number, _, frames) in enumerate(items):
                spans = post.moments.get(number, [])
                whole, parts = embedder.embed_video_moments(frames, [m.frames for m in spans])
                pooled.append(whole)
                moments[i] = list(zip(spans, _checked(np.asarray(parts), len(spans)), strict=True))
            vectors = np.stack(pooled).astype(np.float32)
            if suggest:
                posteriors = embedder.media_posteriors("video", media)
        return _checked(vectors, len(items), modality), posteriors, moments

    @staticmethod
    def _record(
        clean: CleanPost,
        number: int,
        modality: Modality,
        ref: str | None,
        vector: np.ndarray,
        embedder: Embedder,
        now: datetime,
    ) -> VectorRecord:
        post = clean.post
        return VectorRecord(
            post_id=post.id,
            item=number,
            modality=modality,
            vector=[float(x) for x in vector],
            model_version=embedder.version,
            created_at=post.created_at,
            embedded_at=now,
            author=post.author,
            text=post.text,
            tags=list(clean.hashtags),
            lang=post.lang,
            media_ref=ref,
            source=post.source,
            produced_at=clean.produced_at,
        )


def _stops_stage(exc: BaseException) -> bool:
    """Whether ``exc`` is no post's fault and no retry will cure it, so the stage must
    stop rather than dead-letter posts: a crossfeed error that is neither retriable nor
    about the input, such as :class:`~crossfeed.encoders.exceptions.ModelLoadError` or
    :class:`~crossfeed.encoders.exceptions.HeadVersionError` (configuration errors).

    Other exceptions (a bug, a tower choking on one image) stay blamed on the posts.
    """
    return (
        isinstance(exc, CrossfeedError)
        and not exc.retriable
        and not isinstance(exc, InvalidInputError)
    )


def _checked(vectors: np.ndarray, rows: int, what: str = "moment") -> np.ndarray:
    """``vectors`` when it is ``(rows, dim)`` and finite, else ValueError."""
    if rows == 0:
        return vectors
    if vectors.ndim != 2 or vectors.shape[0] != rows or vectors.shape[1] < 1:
        raise ValueError(f"{what} embedder returned shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ValueError(f"{what} embedder returned non-finite values")
    return vectors
