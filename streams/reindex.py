"""Back-filling a head version into its own collection (``crossfeed reindex``).

Vectors of different head versions live in different spaces, possibly of
different dimensions, so serving a new version means re-embedding every post.
:func:`run_reindex` reads ``posts.clean`` from the earliest offset in its own
consumer group, embeds each micro-batch with the same :class:`EmbedStage` the
workers use (an embedder of the requested version) and hands the vector records
straight to an :class:`IndexStage` writing the target collection: they never
travel through ``posts.vectors``. Dead letters still go to the dead-letter topic.

Offsets are committed only after a batch was indexed and its dead letters were
acknowledged (at-least-once); a replayed post upserts the same ``row_id`` again,
so running twice, or resuming a stopped run, leaves the same rows. Without
``follow`` the run ends once caught up: every assigned partition reached the end
offset seen at start *and* nothing arrived for ``idle_s`` seconds (some
Kafka-compatible brokers under-report end offsets). With ``follow`` it keeps
going, serving as a second embed+index worker for the new version until the
switch, and stops on ``stop`` (the CLI sets it on SIGINT/SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crossfeed.indexer.erasure import Eraser, default_eraser
from crossfeed.indexer.exceptions import VectorIndexError
from crossfeed.streams.delivery import Publisher
from crossfeed.streams.exceptions import ReindexError
from crossfeed.streams.hooks import LiveHooks
from crossfeed.streams.metrics import WorkerMetrics
from crossfeed.streams.pipeline import build_pipeline
from crossfeed.streams.reindex_kafka import (
    CatchUpPoller,
    KafkaPublisher,
    open_consumer,
    open_producer,
)

if TYPE_CHECKING:
    from kafka import KafkaConsumer

    from crossfeed.core.settings import Settings
    from crossfeed.encoders.base import Embedder
    from crossfeed.indexer.base import VectorIndex
    from crossfeed.streams.index import EpochBumper
from crossfeed.indexer.collections import check_collection_name, default_collection, slug
from crossfeed.indexer.exceptions import InvalidCollectionNameError

log = logging.getLogger(__name__)


def default_group(app_id: str, version: str) -> str:
    """The consumer group of a reindex run: resuming a ``--follow`` run reuses it."""
    return f"{app_id}-reindex-{slug(version)}"


# --------------------------------------------------------------------------- publishers


class RoutingPublisher:
    """Keeps messages for ``keep_topic`` in memory (for the index stage); forwards the
    rest (dead letters) to ``forward``."""

    def __init__(self, keep_topic: str, forward: Publisher) -> None:
        self.keep_topic = keep_topic
        self._forward = forward
        self._kept: list[bytes | None] = []

    async def publish(self, topic: str, key: str | None, value: bytes | None) -> None:
        if topic == self.keep_topic:
            self._kept.append(value)
        else:
            await self._forward.publish(topic, key, value)

    def drain(self) -> list[bytes | None]:
        """The kept values, oldest first; the buffer is emptied."""
        kept, self._kept = self._kept, []
        return kept


class _NoEpoch:
    """A collection nobody searches yet needs no cache invalidation."""

    def bump(self, fence: int | None = None) -> int:
        return 0


# --------------------------------------------------------------------------- the run


@dataclass
class ReindexReport:
    model_version: str
    collection: str
    group: str
    posts: int = 0
    duplicates_skipped: int = 0
    rows_written: int = 0
    deadletters: int = 0
    skipped: int = 0  # vector records of another version (only if the embedder changed)
    seconds: float = 0.0
    collection_rows: int | None = None
    stopped: bool = False  # ended by ``stop`` rather than by catching up

    @property
    def switch_env(self) -> str:
        """The settings that make the API and workers serve this run's collection."""
        return (
            f"CROSSFEED_MODEL_VERSION={self.model_version} CROSSFEED_COLLECTION={self.collection}"
        )


def run_reindex(
    settings: Settings,
    model_version: str,
    *,
    collection: str | None = None,
    group: str | None = None,
    follow: bool = False,
    idle_s: float = 10.0,
    batch_size: int | None = None,
    embedder: Embedder | None = None,
    index: VectorIndex | None = None,
    epoch: EpochBumper | None = None,
    stop: threading.Event | None = None,
    progress: bool = False,
    join_timeout_s: float = 60.0,
    eraser: Eraser | None = None,
) -> ReindexReport:
    """Re-embed ``posts.clean`` with ``model_version`` into ``collection``; see the module.

    ``collection`` defaults to :func:`default_collection` of the configured one,
    ``group`` to :func:`default_group`, ``batch_size`` to the stream batch size.
    ``embedder`` and ``index`` replace the configured ones (tests). The epoch is
    bumped only when writing the collection the API serves (``epoch`` overrides).
    Raises :class:`ReindexError` when it cannot run: an unknown version, an unreachable
    broker or index, a missing topic, a target collection of another dimension.
    """
    if idle_s < 0:
        raise ReindexError("idle_s must be >= 0")
    size = batch_size if batch_size is not None else settings.stream.batch_size
    if size < 1:
        raise ReindexError("batch size must be >= 1")
    embedder, version = _resolve_embedder(settings, model_version, embedder)
    try:
        target = check_collection_name(
            collection or default_collection(settings.milvus.collection, version)
        )
    except InvalidCollectionNameError as exc:
        raise ReindexError(str(exc)) from exc
    if epoch is None and target != settings.milvus.collection:
        epoch = _NoEpoch()
    if target == settings.milvus.collection:
        log.warning("reindexing into the collection the API serves (%s)", target)
    run_settings = _settings_for(settings, version, target)
    report = ReindexReport(version, target, group or default_group(settings.stream.app_id, version))
    with contextlib.ExitStack() as cleanup:
        # Kafka first: an unreachable broker or a missing topic must not leave a new,
        # empty collection behind.
        consumer = open_consumer(settings, report.group, size)
        cleanup.callback(consumer.close, autocommit=False)
        poller = CatchUpPoller(consumer, settings.kafka.topic_clean, follow, idle_s, join_timeout_s)
        poller.start()
        real_index = index is None
        if index is None:
            from crossfeed.indexer.milvus import MilvusIndex

            index = MilvusIndex(run_settings.milvus)
            cleanup.callback(index.close)  # ours: opened here, closed here
        _prepare_index(index, embedder.dim, target, settings.milvus.uri)
        dead = KafkaPublisher(lambda: open_producer(settings))
        cleanup.callback(dead.close)
        routing = RoutingPublisher(settings.kafka.topic_vectors, dead)
        own_eraser = default_eraser(run_settings) if real_index else None
        pipe = build_pipeline(
            run_settings,
            stages=("embed", "index"),
            publisher=routing,
            embedder=embedder,
            index=index,
            epoch=epoch,
            metrics=WorkerMetrics(),
            # A back-fill of a version not served yet: no standing queries, freshness or
            # pictures of its own (the serving stream made the posts' thumbnails).
            live=LiveHooks(),
            # Erased posts stay out of the back-fill (their clean records may predate the
            # tombstone's compaction); tests without engines pass their own or none.
            eraser=eraser if eraser is not None else own_eraser,
        )
        pipe.owns_eraser = own_eraser is not None and eraser is None
        loop = asyncio.new_event_loop()
        cleanup.callback(loop.close)
        cleanup.callback(lambda: loop.run_until_complete(pipe.aclose()))
        assert pipe.embed is not None and pipe.index is not None
        embed, index_stage = pipe.embed, pipe.index

        async def handle(values: list[bytes | None]) -> None:
            embedded = await embed.handle_batch(values)
            indexed = await index_stage.handle_batch(routing.drain())
            report.duplicates_skipped += embedded.duplicates_skipped
            report.rows_written += indexed.rows_written
            report.deadletters += embedded.deadlettered + indexed.deadlettered
            report.skipped += indexed.skipped

        started = time.monotonic()
        batch = _Committer(loop, handle, dead, consumer, report)
        report.stopped = poller.run(batch, stop or threading.Event(), progress)
        report.seconds = time.monotonic() - started
        report.collection_rows = index.count()
    return report


def _resolve_embedder(
    settings: Settings, model_version: str, embedder: Embedder | None
) -> tuple[Embedder, str]:
    """The embedder for ``model_version`` and its concrete version ("latest" resolved)."""
    if embedder is None:
        from crossfeed.encoders.exceptions import HeadVersionError
        from crossfeed.encoders.model import load_embedder
        from crossfeed.encoders.versions import list_versions

        embedder = load_embedder(_settings_for(settings, model_version, None))
        try:
            version = embedder.version  # loads the heads only, not the towers
        except HeadVersionError as exc:
            known = [v.version for v in list_versions(settings.models_dir)]
            raise ReindexError(
                f"{exc} (versions in {settings.models_dir}: {', '.join(known) or 'none'})"
            ) from exc
    else:
        version = embedder.version
    if model_version != "latest" and version != model_version:
        raise ReindexError(f"the embedder is version {version}, not {model_version}")
    return embedder, version


def _settings_for(settings: Settings, version: str, collection: str | None) -> Settings:
    """A copy of ``settings`` with another head version and, if given, collection."""
    out = copy.copy(settings)
    out.encoder = settings.encoder.model_copy(update={"model_version": version})
    if collection is not None:
        out.milvus = settings.milvus.model_copy(update={"collection": collection})
    return out


def _prepare_index(index: VectorIndex, dim: int, collection: str, uri: str) -> None:
    try:
        index.ensure_ready(dim)
    except VectorIndexError as exc:
        raise ReindexError(
            f"cannot prepare collection {collection} ({dim} dims) in Milvus at {uri}: {exc}",
            retriable=exc.retriable,
        ) from exc


class _Committer:
    """Indexes one batch, then commits: dead letters flushed first, offsets last."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        handle: Callable[[list[bytes | None]], Coroutine[Any, Any, None]],
        dead: KafkaPublisher,
        consumer: KafkaConsumer,
        report: ReindexReport,
    ) -> None:
        self._loop = loop
        self._handle = handle
        self._dead = dead
        self._consumer = consumer
        self._report = report

    def __call__(self, values: list[bytes | None]) -> None:
        from kafka.errors import CommitFailedError, KafkaError

        self._loop.run_until_complete(self._handle(values))
        self._report.posts += len(values)
        self._dead.flush()
        try:
            self._consumer.commit()
        except CommitFailedError as exc:  # a rebalance took the partitions: they are replayed
            log.warning("offset commit failed, the batch will be replayed: %s", exc)
        except KafkaError as exc:
            raise ReindexError(f"cannot commit offsets: {exc}", retriable=True) from exc
