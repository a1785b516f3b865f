"""The worker's Kafka consumer gets its fetch wait from settings (not faust's fixed 1500 ms)."""

from __future__ import annotations

import asyncio
import uuid

import aiokafka
import pytest

from crossfeed.core.settings import KafkaSettings, Settings, StreamSettings
from crossfeed.streams.app import create_app
from crossfeed.streams.dedupe import InMemoryDedupeStore
from crossfeed.streams.hooks import LiveHooks
from crossfeed.streams.metrics import WorkerMetrics
from crossfeed.streams.testing import RecordingPublisher
from crossfeed.streams.transport import DEFAULT_FETCH_MAX_WAIT_MS


def _app(wait_ms: int | None = None):  # type: ignore[no-untyped-def]
    settings = Settings()
    # A private consumer group: never join (and rebalance) a running pipeline's.
    settings.stream = StreamSettings(
        CROSSFEED_APP_ID=f"crossfeed-test-transport-{uuid.uuid4().hex}"
    )
    if wait_ms is not None:
        settings.kafka = KafkaSettings(CROSSFEED_KAFKA_FETCH_MAX_WAIT_MS=wait_ms)
    return create_app(
        settings,
        stages=("normalize",),
        publisher=RecordingPublisher(),
        dedupe=InMemoryDedupeStore(),
        metrics=WorkerMetrics(),
        live=LiveHooks(),
    )


async def _worker_consumer(app) -> aiokafka.AIOKafkaConsumer:  # type: ignore[no-untyped-def]
    return app.consumer._thread._create_consumer(asyncio.get_running_loop())


async def test_the_worker_consumer_waits_what_settings_say() -> None:
    consumer = await _worker_consumer(_app(77))
    assert consumer._fetch_max_wait_ms == 77


async def test_the_default_wait_is_short() -> None:
    assert KafkaSettings().fetch_max_wait_ms == DEFAULT_FETCH_MAX_WAIT_MS == 100
    consumer = await _worker_consumer(_app())
    assert consumer._fetch_max_wait_ms == 100


def test_the_wait_is_validated() -> None:
    with pytest.raises(ValueError):
        KafkaSettings(CROSSFEED_KAFKA_FETCH_MAX_WAIT_MS=0)


@pytest.mark.integration
async def test_the_started_consumer_fetches_with_that_wait() -> None:
    """On the real broker: aiokafka's fetcher, built at start(), carries the wait."""
    app = _app(123)
    consumer = await _worker_consumer(app)
    consumer.subscribe([f"crossfeed-test-transport-{uuid.uuid4().hex[:8]}"])
    await consumer.start()
    try:
        assert consumer._fetcher._fetch_max_wait_ms == 123
    finally:
        await consumer.stop()
