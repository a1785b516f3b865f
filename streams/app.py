"""The faust application: three agents wired to crossfeed's topics.

``posts.raw -> normalize -> posts.clean -> embed -> posts.vectors -> index -> vector index``,
with failures of any stage on ``posts.deadletter``. All topics carry JSON with
the post id as key; values are read as raw bytes so malformed JSON reaches the
normalize stage (and the dead-letter topic) instead of crashing faust's decoder.

Acknowledgement (why ``noack``): faust acks an event when the ``async for``
iteration that produced it ends, and ``stream.take()`` acks a buffered batch in
a ``finally`` block, which also runs when the generator is closed because the
agent is cancelled or crashed mid-batch: the batch would then be committed
although it was never processed. Every agent here therefore iterates without
automatic acks and calls ``stream.ack(event)`` only after the stage returned,
i.e. after its outputs were handed to the producer (faust flushes the producer
before committing offsets) and, for the index stage, after the index accepted
the upsert.

Workers never run faust's web server (``web_enabled=False``; on faust's own
command line that is ``--without-web``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import faust

from crossfeed.core.kafka import MAX_MESSAGE_BYTES, KafkaConnection
from crossfeed.core.settings import Settings
from crossfeed.encoders.base import Embedder
from crossfeed.exceptions import ConfigError
from crossfeed.indexer.base import VectorIndex
from crossfeed.streams.dedupe import DedupeStore, RedisDedupeStore
from crossfeed.streams.delivery import Publisher
from crossfeed.streams.embed import EmbedStage
from crossfeed.streams.index import EpochBumper, IndexStage
from crossfeed.streams.media import DecodeLimits, MediaFetcher, MediaPolicy
from crossfeed.streams.metrics import WorkerMetrics
from crossfeed.streams.normalize import NormalizeStage
from crossfeed.streams.topics import Topics

log = logging.getLogger(__name__)

STAGES: tuple[str, ...] = ("normalize", "embed", "index")
AGENT_NAMES = {stage: f"crossfeed.{stage}" for stage in STAGES}


def check_stages(stages: Sequence[str]) -> tuple[str, ...]:
    unknown = sorted(set(stages) - set(STAGES))
    if unknown or not stages:
        raise ConfigError(
            f"stages must be a non-empty subset of {list(STAGES)}, got {list(stages)}"
        )
    return tuple(s for s in STAGES if s in stages)


@dataclass
class Pipeline:
    """The stage objects of one worker; the agents call them, the worker closes them."""

    metrics: WorkerMetrics
    normalize: NormalizeStage | None = None
    embed: EmbedStage | None = None
    index: IndexStage | None = None
    dedupe: DedupeStore | None = None
    closers: list[Any] = field(default_factory=list)

    async def aclose(self) -> None:
        for stage in (self.embed, self.index):
            if stage is not None:
                stage.close()
        if self.dedupe is not None:
            await self.dedupe.close()
        for close in self.closers:
            close()


class _LazyPublisher:
    """Publishes to the app's faust topics (bound once they are created)."""

    def __init__(self) -> None:
        self.topics: dict[str, faust.TopicT] = {}

    async def publish(self, topic: str, key: str | None, value: bytes) -> None:
        # Buffered in the producer; faust flushes it before committing any offset.
        await self.topics[topic].send(key=key.encode("utf-8") if key else None, value=value)


def build_pipeline(
    settings: Settings,
    *,
    stages: Sequence[str] = STAGES,
    publisher: Publisher,
    embedder: Embedder | None = None,
    index: VectorIndex | None = None,
    dedupe: DedupeStore | None = None,
    epoch: EpochBumper | None = None,
    metrics: WorkerMetrics | None = None,
    fetcher: MediaFetcher | None = None,
    allow_private_hosts: bool | None = None,
) -> Pipeline:
    """Stage objects for ``stages``; defaults talk to the configured engines, lazily.

    ``allow_private_hosts`` (media URLs on loopback/private networks) defaults to
    the ``allow_private_urls`` stream setting.
    """
    stages = check_stages(stages)
    if allow_private_hosts is None:
        allow_private_hosts = settings.stream.allow_private_urls
    pipe = Pipeline(metrics=metrics or WorkerMetrics())
    if "normalize" in stages:
        if dedupe is None:
            dedupe = RedisDedupeStore(
                settings.redis.url.get_secret_value(),
                key_prefix=settings.redis.key_prefix,
                ttl_s=settings.stream.dedupe_ttl_s,
            )
        pipe.dedupe = dedupe
        pipe.normalize = NormalizeStage(
            dedupe=dedupe, publisher=publisher, topics=settings.kafka, metrics=pipe.metrics
        )
    # The index stage writes only this version (None = any); see IndexStage.
    index_version: str | Callable[[], str] | None = None
    if settings.encoder.model_version != "latest":
        index_version = settings.encoder.model_version
    if "embed" in stages:
        load = _shared_embedder(settings, embedder)
        # A worker that embeds indexes what its own embedder makes, nothing older.
        index_version = lambda: load().version  # noqa: E731

        suggester = None
        if settings.stream.suggest_tags:
            from crossfeed.streams.suggest import SuggestConfig, TagSuggestStep

            def open_suggest_index() -> VectorIndex:
                from crossfeed.indexer.milvus import MilvusIndex

                return MilvusIndex(settings.milvus)

            suggester = TagSuggestStep(
                index if index is not None else open_suggest_index,
                pipe.metrics,
                SuggestConfig.from_settings(settings),
            )
        pipe.embed = EmbedStage(
            suggester=suggester,
            moment_s=settings.encoder.video_moment_s,
            embedder=embedder if embedder is not None else load,
            fetcher=fetcher
            or MediaFetcher(
                MediaPolicy.from_settings(settings, allow_private_hosts=allow_private_hosts)
            ),
            limits=DecodeLimits.from_settings(settings),
            publisher=publisher,
            topics=settings.kafka,
            metrics=pipe.metrics,
        )
    if "index" in stages:

        def open_index() -> VectorIndex:
            from crossfeed.indexer.milvus import MilvusIndex

            return MilvusIndex(settings.milvus)

        if epoch is None:
            from crossfeed.indexer.epoch import IndexEpoch

            real_epoch = IndexEpoch.from_settings(settings.redis)
            pipe.closers.append(real_epoch.close)
            epoch = real_epoch
        pipe.index = IndexStage(
            index=index if index is not None else open_index,
            epoch=epoch,
            publisher=publisher,
            topics=settings.kafka,
            metrics=pipe.metrics,
            model_version=index_version,
        )
    return pipe


def _shared_embedder(settings: Settings, embedder: Embedder | None) -> Callable[[], Embedder]:
    """``embedder``, or the configured one created once on first call (thread-safe), so
    the embed stage and the index stage's version guard share one instance."""
    if embedder is not None:
        given = embedder
        return lambda: given
    lock = threading.Lock()
    loaded: list[Embedder] = []

    def load() -> Embedder:
        with lock:
            if not loaded:
                from crossfeed.encoders.model import load_embedder

                loaded.append(load_embedder(settings))
            return loaded[0]

    return load


def _manual_acks(stream: faust.StreamT) -> faust.Stream:
    """The same stream with automatic acks off: the agent acks each event itself."""
    return cast(faust.Stream, cast(faust.Stream, stream).noack())


def create_app(
    settings: Settings,
    *,
    stages: Sequence[str] = STAGES,
    publisher: Publisher | None = None,
    **pipeline_kwargs: Any,
) -> faust.App:
    """A faust app running ``stages``; nothing connects until a worker starts it.

    ``pipeline_kwargs`` (``embedder=``, ``index=``, ``dedupe=``, ``epoch=``,
    ``metrics=``, ``fetcher=``, ``allow_private_hosts=``) go to
    :func:`build_pipeline`; the defaults are the real engines from ``settings``.
    ``publisher`` replaces the faust topics as the stages' output (unit tests
    with faust's in-memory agent harness). The stage objects are on
    ``app.crossfeed_pipeline``, the topics by name on ``app.crossfeed_topics``.
    """
    stages = check_stages(stages)
    kafka = settings.kafka
    declared = Topics(kafka)
    session = float(kafka.session_timeout_s)
    app = faust.App(
        settings.stream.app_id,
        **KafkaConnection(kafka).faust(),
        web_enabled=False,
        autodiscover=False,
        store="memory://",
        datadir=str(settings.state.state_dir / "faust" / settings.stream.app_id),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=kafka.partitions,
        # Some brokers under-report end offsets: never rely on "latest".
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=session,
        broker_heartbeat_interval=max(0.5, min(3.0, session / 4)),
        broker_rebalance_timeout=max(session * 2, 30.0),
        producer_acks=-1,
        producer_max_request_size=MAX_MESSAGE_BYTES,
    )
    faust_publisher = _LazyPublisher()
    # The same specs as ensure_topics, whichever of the two creates a topic.
    topics = {
        spec.name: app.topic(
            spec.name,
            partitions=spec.partitions,
            compacting=spec.compacted or None,
            config=spec.configs or None,
        )
        for spec in declared.specs()
    }
    faust_publisher.topics.update(topics)
    pipeline = build_pipeline(
        settings, stages=stages, publisher=publisher or faust_publisher, **pipeline_kwargs
    )
    app.crossfeed_pipeline = pipeline  # type: ignore[attr-defined]
    app.crossfeed_topics = topics  # type: ignore[attr-defined]
    batch_size = max(1, settings.stream.batch_size)
    batch_wait = max(0.01, settings.stream.batch_wait_s)

    @app.task
    async def declare_topics() -> None:
        for topic in topics.values():
            await topic.maybe_declare()

    if "normalize" in stages:
        normalize_stage = pipeline.normalize
        assert normalize_stage is not None

        @app.agent(topics[kafka.topic_raw], name=AGENT_NAMES["normalize"])
        async def normalize(stream: faust.StreamT) -> Any:
            events = _manual_acks(stream)
            async for event in events.events():
                outcome = await normalize_stage.handle(event.value)
                await events.ack(event)
                yield outcome

    def batched_agent(stage_name: str, topic_name: str, stage: Any) -> None:
        """An agent that hands micro-batches to ``stage`` and acks only after it returned."""

        @app.agent(topics[topic_name], name=AGENT_NAMES[stage_name])
        async def run(stream: faust.StreamT) -> Any:
            events = _manual_acks(stream)
            async for batch in events.noack_take(batch_size, within=batch_wait):
                report = await stage.handle_batch([e.value for e in batch])
                for event in batch:
                    await events.ack(event)
                log.debug("%s batch: %s", stage_name, report)
                yield report

    if "embed" in stages:
        assert pipeline.embed is not None
        batched_agent("embed", kafka.topic_clean, pipeline.embed)
    if "index" in stages:
        assert pipeline.index is not None
        batched_agent("index", kafka.topic_vectors, pipeline.index)

    return app
