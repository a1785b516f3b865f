"""The stream workers' metrics (normalize, embed, index stages and the suggest step)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from crossfeed.core.metrics import LATENCY_BUCKETS, MetricsBundle


class WorkerMetrics(MetricsBundle):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        self.posts_in = Counter("crossfeed_posts_in", "Posts read, by stage", ["stage"], registry=r)
        self.posts_out = Counter(
            "crossfeed_posts_out", "Posts written, by stage", ["stage"], registry=r
        )
        self.deadletters = Counter(
            "crossfeed_deadletters", "Messages sent to the dead-letter topic", ["stage"], registry=r
        )
        self.deadletter_reasons = Counter(
            "crossfeed_deadletter_reasons",
            "Dead letters by stage and reason label (live/activity.py reason_label)",
            ["stage", "reason"],
            registry=r,
        )
        self.matches = Counter(
            "crossfeed_subscription_matches",
            "New matches of standing queries recorded by the index stage",
            registry=r,
        )
        self.percolate_seconds = Histogram(
            "crossfeed_percolate_seconds",
            "Matching a batch against every standing query (and recording the matches)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.erased = Counter(
            "crossfeed_erased", "Posts erased by a tombstone on posts.raw", registry=r
        )
        self.erased_dropped = Counter(
            "crossfeed_erased_dropped",
            "Posts dropped (normalize) or not indexed (index) because they were erased",
            registry=r,
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
            buckets=LATENCY_BUCKETS,
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
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # The trends step (streams/trends.py): optional, never holds the stages up.
        self.trends_observed = Counter(
            "crossfeed_trends_observed",
            "Posts (and reposts) handed to the trend tracker",
            registry=r,
        )
        self.trends_errors = Counter(
            "crossfeed_trends_errors",
            "Tracker calls that failed (their observations are lost, the stream goes on)",
            registry=r,
        )
        self.trends_lost = Counter(
            "crossfeed_trends_lost",
            "Observations of failed tracker calls",
            registry=r,
        )
        self.trends_dropped = Counter(
            "crossfeed_trends_dropped",
            "Observations dropped because the trends queue was full (tracker too slow)",
            registry=r,
        )
        self.trends_batch_seconds = Histogram(
            "crossfeed_trends_batch_seconds",
            "One tracker call (a batch of observations)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # Redis away (core/breaker.py): what degrades, and what is owed for later.
        self.degraded = Gauge(
            "crossfeed_degraded",
            "1 while a part is away and the stages degrade (what: dedupe, epoch, matches, "
            "thumbnails, erasure_checks)",
            ["what"],
            registry=r,
        )
        self.repost_checks_skipped = Counter(
            "crossfeed_repost_checks_skipped",
            "Posts forwarded as originals without a repost check (Redis was away)",
            registry=r,
        )
        self.epoch_bump_owed = Gauge(
            "crossfeed_epoch_bump_owed",
            "1 while an index epoch bump is owed (Redis away); paid when it is back",
            registry=r,
        )
        self.matches_buffered = Gauge(
            "crossfeed_matches_buffered",
            "Standing-query matches held in memory until Redis is back",
            registry=r,
        )
        self.matches_dropped = Counter(
            "crossfeed_matches_dropped",
            "Standing-query matches dropped: the buffer was full while Redis was away",
            registry=r,
        )
        self.erasure_checks_owed = Gauge(
            "crossfeed_erasure_checks_owed",
            "Posts indexed without an erasure check (Redis away), checked when it is back",
            registry=r,
        )
        self.thumbnails_skipped = Counter(
            "crossfeed_thumbnails_skipped",
            "Thumbnails not stored (Redis was away)",
            registry=r,
        )
