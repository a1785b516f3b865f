"""Prometheus metrics as one typed bundle against an explicit registry.

Create one :class:`Metrics` per process (workers and API each) and pass it
down; never register on the global default registry, so tests can build as many
bundles as they like.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        # streams
        self.posts_in = Counter("crossfeed_posts_in", "Posts read, by stage", ["stage"], registry=r)
        self.posts_out = Counter(
            "crossfeed_posts_out", "Posts written, by stage", ["stage"], registry=r
        )
        self.deadletters = Counter(
            "crossfeed_deadletters", "Messages sent to the dead-letter topic", ["stage"], registry=r
        )
        self.duplicates = Counter(
            "crossfeed_duplicates", "Reposts detected by content hash", registry=r
        )
        self.embedded = Counter(
            "crossfeed_embedded", "Items embedded, by modality", ["modality"], registry=r
        )
        self.embed_batch_seconds = Histogram(
            "crossfeed_embed_batch_seconds",
            "Embedding time per micro-batch",
            ["modality"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.indexed = Counter("crossfeed_indexed_rows", "Rows upserted into the index", registry=r)
        self.index_skipped = Counter(
            "crossfeed_index_skipped_rows",
            "Vector records not indexed, by reason (e.g. another model version)",
            ["reason"],
            registry=r,
        )
        self.tags_suggested = Counter(
            "crossfeed_tags_suggested",
            "Media items of untagged posts given suggested tags by the stream, by modality",
            ["modality"],
            registry=r,
        )
        self.index_batch_seconds = Histogram(
            "crossfeed_index_batch_seconds",
            "Upsert time per batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # api
        self.requests = Counter(
            "crossfeed_http_requests", "HTTP requests", ["route", "status"], registry=r
        )
        self.search_seconds = Histogram(
            "crossfeed_search_seconds",
            "Search latency",
            ["cached"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.cache_hits = Counter("crossfeed_cache_hits", "Search cache hits", registry=r)
        self.cache_misses = Counter("crossfeed_cache_misses", "Search cache misses", registry=r)
        self.index_rows = Gauge("crossfeed_index_rows", "Rows in the index (last seen)", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
