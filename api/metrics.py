"""The API's metrics (requests, search latency, cache, index size)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from crossfeed.core.metrics import LATENCY_BUCKETS, MetricsBundle


class ApiMetrics(MetricsBundle):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        self.requests = Counter(
            "crossfeed_http_requests", "HTTP requests", ["route", "status"], registry=r
        )
        self.search_seconds = Histogram(
            "crossfeed_search_seconds",
            "Search latency",
            ["cached"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cache_hits = Counter("crossfeed_cache_hits", "Search cache hits", registry=r)
        self.cache_misses = Counter("crossfeed_cache_misses", "Search cache misses", registry=r)
        self.index_rows = Gauge("crossfeed_index_rows", "Rows in the index (last seen)", registry=r)
        self.degraded = Gauge(
            "crossfeed_degraded",
            "1 while a part is away and answers are degraded (what: cache)",
            ["what"],
            registry=r,
        )
