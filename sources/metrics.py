"""The connectors' metrics: events by kind, skips by reason, reconnects, liveness."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from crossfeed.core.metrics import MetricsBundle


class SourceMetrics(MetricsBundle):
    """Every metric is labelled by ``source`` (bluesky, mastodon); a connector sets its
    liveness function on :attr:`seconds_since_event` itself."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        self.events = Counter(
            "crossfeed_source_events",
            "Events read from the service, by kind (post, delete, skipped, malformed, "
            "duplicate, heartbeat)",
            ["source", "kind"],
            registry=r,
        )
        self.skipped = Counter(
            "crossfeed_source_skipped",
            "Events not produced, by reason",
            ["source", "reason"],
            registry=r,
        )
        self.produced = Counter(
            "crossfeed_source_produced",
            "Messages handed to Kafka, by topic kind (post, tombstone, deadletter)",
            ["source", "kind"],
            registry=r,
        )
        self.reconnects = Counter(
            "crossfeed_source_reconnects", "Connections re-opened", ["source"], registry=r
        )
        self.connected = Gauge(
            "crossfeed_source_connected", "1 while connected to the service", ["source"], registry=r
        )
        self.seconds_since_event = Gauge(
            "crossfeed_source_seconds_since_event",
            "Liveness: seconds since the service last sent anything (an event or a heartbeat)",
            ["source"],
            registry=r,
        )
        self.event_lag = Gauge(
            "crossfeed_source_event_lag_seconds",
            "How far behind the service's clock the last event was read",
            ["source"],
            registry=r,
        )
