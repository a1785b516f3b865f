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

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import faust

from crossfeed.core.kafka import MAX_MESSAGE_BYTES, KafkaConnection
from crossfeed.core.settings import Settings
from crossfeed.indexer.collections import slug
from crossfeed.streams.delivery import Publisher
from crossfeed.streams.pipeline import STAGES, build_pipeline, check_stages
from crossfeed.streams.topics import Topics
from crossfeed.streams.transport import CrossfeedApp

log = logging.getLogger(__name__)

AGENT_NAMES = {stage: f"crossfeed.{stage}" for stage in STAGES}
ACTIVITY_FLUSH_S = 1.0


class _LazyPublisher:
    """Publishes to the app's faust topics (bound once they are created)."""

    def __init__(self) -> None:
        self.topics: dict[str, faust.TopicT] = {}

    async def publish(self, topic: str, key: str | None, value: bytes | None) -> None:
        # Buffered in the producer; faust flushes it before committing any offset.
        await self.topics[topic].send(key=key.encode("utf-8") if key else None, value=value)


def _produced_at(event: Any) -> datetime | None:
    """The record's Kafka timestamp (produce or log-append time), None when absent."""
    ts = getattr(getattr(event, "message", None), "timestamp", None)
    if not isinstance(ts, int | float) or ts <= 0:
        return None
    return datetime.fromtimestamp(float(ts), tz=UTC)


def _manual_acks(stream: faust.StreamT) -> faust.Stream:
    """The same stream with automatic acks off: the agent acks each event itself."""
    return cast(faust.Stream, cast(faust.Stream, stream).noack())


async def _stop(app: faust.App, stage_name: str, exc: Exception) -> None:
    """A stage raised (a configuration error such as a model that cannot be loaded):
    crash the app, which stops the worker with a non-zero status. Left to faust, the
    agent would be restarted and fail again while the unacknowledged batch holds back
    every later commit. The batch is replayed after a restart."""
    log.critical(
        "%s stage failed, stopping the worker (batch not acknowledged): %s: %s",
        stage_name,
        type(exc).__name__,
        exc,
    )
    await app.crash(exc)


def consumer_group(settings: Settings, stages: Sequence[str], version: str | None) -> str:
    """The consumer group (faust app id) of a worker: ``CROSSFEED_APP_ID``, plus the model
    version it serves when it embeds or indexes.

    Workers of two versions (during a switch, or a forgotten one) must not share a group:
    the group would split the partitions between them, and each index stage skips the
    other's vectors, so posts would reach neither collection. With a group per version,
    each version's workers see every post (normalize runs once per version; its outputs
    are idempotent). ``version`` is the loaded embedder's; without one, a pinned
    ``CROSSFEED_MODEL_VERSION``; a normalize-only worker, or one on "latest" without an
    embedder, uses the plain app id.
    """
    base = settings.stream.app_id
    if not {"embed", "index"} & set(stages):
        return base
    if version is None and settings.encoder.model_version != "latest":
        version = settings.encoder.model_version
    return f"{base}-{slug(version)}" if version else base


def create_app(
    settings: Settings,
    *,
    stages: Sequence[str] = STAGES,
    publisher: Publisher | None = None,
    **pipeline_kwargs: Any,
) -> faust.App:
    """A faust app running ``stages``; nothing connects until a worker starts it.

    ``pipeline_kwargs`` (``embedder=``, ``index=``, ``dedupe=``, ``epoch=``,
    ``metrics=``, ``fetcher=``, ``allow_private_hosts=``, ``live=``) go to
    :func:`build_pipeline`; the defaults are the real engines from ``settings``.
    ``publisher`` replaces the faust topics as the stages' output (unit tests
    with faust's in-memory agent harness). The stage objects are on
    ``app.crossfeed_pipeline``, the topics by name on ``app.crossfeed_topics``.
    """
    stages = check_stages(stages)
    kafka = settings.kafka
    declared = Topics(kafka)
    session = float(kafka.session_timeout_s)
    embedder = pipeline_kwargs.get("embedder")
    group = consumer_group(settings, stages, embedder.version if embedder is not None else None)
    app = CrossfeedApp(
        group,
        fetch_max_wait_ms=kafka.fetch_max_wait_ms,
        **KafkaConnection(kafka).faust(),
        web_enabled=False,
        autodiscover=False,
        store="memory://",
        datadir=str(settings.state.state_dir / "faust" / settings.stream.app_id),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=kafka.partitions,
        # faust's CreateTopics cannot ask for the broker's default: 0 means faust's 1.
        topic_replication_factor=kafka.replication_factor or 1,
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

    activity = pipeline.live.activity
    if activity is not None:

        @app.timer(ACTIVITY_FLUSH_S)
        async def publish_activity() -> None:
            """This worker's posts/s and dead letters, to Redis for the API's /v1/stats."""
            await asyncio.get_running_loop().run_in_executor(None, activity.flush)

    index_stage = pipeline.index
    if index_stage is not None and pipeline.outage is not None:

        @app.timer(settings.redis.breaker_reset_s)
        async def settle_owed() -> None:
            """Pay what a Redis outage left owed (epoch bump, erasure checks, matches)
            even when no batch comes to do it."""
            await index_stage.settle()

    if "normalize" in stages:
        normalize_stage = pipeline.normalize
        assert normalize_stage is not None

        @app.agent(topics[kafka.topic_raw], name=AGENT_NAMES["normalize"])
        async def normalize(stream: faust.StreamT) -> Any:
            """Micro-batches too: one Redis round trip per batch for the erasure and
            repost checks (see :meth:`NormalizeStage.handle_batch`); one outcome per post."""
            events = _manual_acks(stream)
            async for batch in events.noack_take(batch_size, within=batch_wait):
                records = [
                    (
                        e.value,
                        _produced_at(e),
                        e.key.decode("utf-8", "replace") if e.key else None,
                    )
                    for e in batch
                ]
                try:
                    outcomes = await normalize_stage.handle_batch(records)
                except Exception as exc:
                    await _stop(app, "normalize", exc)
                    raise
                for event in batch:
                    await events.ack(event)
                for outcome in outcomes:
                    yield outcome

    def batched_agent(stage_name: str, topic_name: str, stage: Any) -> None:
        """An agent that hands micro-batches to ``stage`` and acks only after it returned
        (an exception stops the worker: :func:`_stop`)."""

        @app.agent(topics[topic_name], name=AGENT_NAMES[stage_name])
        async def run(stream: faust.StreamT) -> Any:
            events = _manual_acks(stream)
            async for batch in events.noack_take(batch_size, within=batch_wait):
                try:
                    report = await stage.handle_batch([e.value for e in batch])
                except Exception as exc:
                    await _stop(app, stage_name, exc)
                    raise
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
