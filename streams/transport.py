"""faust's Kafka transport with the consumer's fetch wait taken from settings.

faust builds its worker consumer (aiokafka) with ``fetch_max_wait_ms=1500`` fixed in
code. That is how long the broker may hold a fetch when no new record is there. Apache
Kafka answers a held fetch as soon as a record arrives, so the value costs nothing
there; a broker that does not (the local development broker answers only when the
wait is over) adds up to that long to every hop of the pipeline. Measured on that
broker, produce -> consume on an idle topic: median 0.48 s (max 1.23 s) at 1500 ms,
0.11 s at 500 ms, 0.011 s at 100 ms. Three hops (raw -> clean -> vectors -> index)
made freshness about 2 s there.

``CROSSFEED_KAFKA_FETCH_MAX_WAIT_MS`` (default 100) sets it. The cost of a short wait
is at most one more empty fetch per partition leader every so many milliseconds on an
idle topic; on a busy one fetches return full anyway.

:class:`CrossfeedApp` is ``faust.App`` whose transport builds its consumer thread with
that wait; everything else is faust's own aiokafka driver.
"""

from __future__ import annotations

from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

DEFAULT_FETCH_MAX_WAIT_MS = 100


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this attribute when start() builds its fetcher (no public setter).
        consumer._fetch_max_wait_ms = fetch_max_wait_ms(self.app)
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


def fetch_max_wait_ms(app: Any) -> int:
    """The wait the app was built with (faust's apps of other classes: the default)."""
    return int(getattr(app, "crossfeed_fetch_max_wait_ms", DEFAULT_FETCH_MAX_WAIT_MS))


class CrossfeedApp(faust.App):
    """``faust.App`` with ``fetch_max_wait_ms`` for its worker consumer (Kafka only)."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int = DEFAULT_FETCH_MAX_WAIT_MS, **kw: Any):
        self.crossfeed_fetch_max_wait_ms = int(fetch_max_wait_ms)
        super().__init__(*args, **kw)

    def _new_transport(self) -> Any:
        url = self.conf.broker_consumer[0]
        if url.scheme not in ("kafka", "aiokafka"):
            return super()._new_transport()
        return _Transport(self.conf.broker_consumer, self)
