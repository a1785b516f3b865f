"""The stage objects of one worker, built from settings: normalize, embed, index.

No faust here: :mod:`crossfeed.streams.app` wires these objects to topics, and
``crossfeed reindex`` drives the embed and index stages from its own consumer.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from crossfeed.core.breaker import Outage, redis_outage
from crossfeed.core.settings import Settings
from crossfeed.encoders.base import Embedder
from crossfeed.exceptions import ConfigError
from crossfeed.indexer.base import VectorIndex
from crossfeed.indexer.erasure import Eraser, default_eraser
from crossfeed.streams.dedupe import DedupeStore, RedisDedupeStore
from crossfeed.streams.delivery import Publisher
from crossfeed.streams.embed import EmbedStage
from crossfeed.streams.hooks import LiveHooks
from crossfeed.streams.index import EpochBumper, IndexStage
from crossfeed.streams.media import DecodeLimits, MediaFetcher, MediaPolicy
from crossfeed.streams.metrics import WorkerMetrics
from crossfeed.streams.normalize import NormalizeStage
from crossfeed.streams.trends import TrendsStep, default_trends_step

STAGES: tuple[str, ...] = ("normalize", "embed", "index")


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
    live: LiveHooks = field(default_factory=LiveHooks)
    eraser: Eraser | None = None
    owns_eraser: bool = False
    trends: TrendsStep | None = None
    outage: Outage | None = None  # the breaker around Redis the stages share
    closers: list[Any] = field(default_factory=list)

    async def aclose(self) -> None:
        for stage in (self.embed, self.index):
            if stage is not None:
                stage.close()
        if self.trends is not None:  # hands over what is queued: off the loop
            await asyncio.get_running_loop().run_in_executor(None, self.trends.close)
        if self.dedupe is not None:
            await self.dedupe.close()
        if self.eraser is not None and self.owns_eraser:
            await self.eraser.ledger.close()
        for close in self.closers:
            close()


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
    live: LiveHooks | None = None,
    eraser: Eraser | Literal["auto"] | None = "auto",
    trends: TrendsStep | Literal["auto"] | None = "auto",
    outage: Outage | Literal["auto"] | None = "auto",
) -> Pipeline:
    """Stage objects for ``stages``; defaults talk to the configured engines, lazily.

    ``allow_private_hosts`` (media URLs on loopback/private networks) defaults to
    the ``allow_private_urls`` stream setting. ``live``: the live-monitoring hooks
    (standing queries, freshness, thumbnails, activity); None builds them on the
    configured Redis, ``LiveHooks()`` turns them all off. ``eraser``: erasure (tombstones,
    the ledger that keeps erased posts out); "auto" builds it on the configured engines
    unless a fake index or dedupe store was given (unit tests), None turns it off.
    ``trends``: the trends step (streams/trends.py) fed by normalize (reposts) and index;
    "auto" builds it on the configured Redis under the same condition, unless
    ``CROSSFEED_TRENDS=0``; None turns it off.
    ``outage``: the circuit breaker around Redis, with which the stages keep going while
    Redis is away (see the stages); "auto" builds one unless a fake dedupe store or epoch
    was given, None makes every Redis call wait for Redis (retried until it passes).
    """
    stages = check_stages(stages)
    if allow_private_hosts is None:
        allow_private_hosts = settings.stream.allow_private_urls
    pipe = Pipeline(metrics=metrics or WorkerMetrics())
    if outage == "auto":
        outage = redis_outage(settings.redis) if dedupe is None and epoch is None else None
    assert outage != "auto"
    pipe.outage = outage
    if outage is not None:
        watched = {"normalize": ["dedupe"], "embed": ["thumbnails"], "index": ["epoch"]}
        if "index" in stages:
            watched["index"] += ["matches", "erasure_checks"]
        for stage in stages:
            for what in watched[stage]:
                outage.watch(pipe.metrics.degraded.labels(what=what))
    if live is None:
        live = LiveHooks.from_settings(
            settings, stages=stages, registry=pipe.metrics.registry, outage=outage
        )
        pipe.closers.append(live.close)
    pipe.live = live
    if eraser == "auto":
        eraser = None
        if {"normalize", "index"} & set(stages) and dedupe is None and index is None:
            eraser = default_eraser(settings)
            pipe.owns_eraser = True
    assert eraser != "auto"
    pipe.eraser = eraser
    if trends == "auto":
        trends = None
        if {"normalize", "index"} & set(stages) and dedupe is None and index is None:
            trends = default_trends_step(settings, pipe.metrics)
    assert trends != "auto"
    pipe.trends = trends
    if "normalize" in stages:
        if dedupe is None:
            dedupe = RedisDedupeStore(
                settings.redis.url.get_secret_value(),
                key_prefix=settings.redis.key_prefix,
                ttl_s=settings.stream.dedupe_ttl_s,
            )
        pipe.dedupe = dedupe
        pipe.normalize = NormalizeStage(
            dedupe=dedupe,
            publisher=publisher,
            topics=settings.kafka,
            metrics=pipe.metrics,
            eraser=eraser,
            trends=trends,
            outage=outage,
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
            thumbnails=live.thumbnails,
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
            percolator=live.percolator,
            freshness=live.freshness,
            erasures=eraser.ledger if eraser is not None else None,
            trends=trends,
            outage=outage,
            match_buffer=settings.live.match_buffer,
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
