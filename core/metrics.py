"""Prometheus metrics as typed bundles against an explicit registry.

Each process part owns its bundle (the stream workers :class:`~crossfeed.streams.metrics.
WorkerMetrics`, the API :class:`~crossfeed.api.metrics.ApiMetrics`), built on
:class:`MetricsBundle`: never the global default registry, so tests can build as many
bundles as they like and a process exports exactly what it registered.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class MetricsBundle:
    """A registry and the metrics registered on it; subclasses declare them in ``__init__``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()

    def render(self) -> bytes:
        """The registry in Prometheus' text exposition format."""
        return generate_latest(self.registry)
