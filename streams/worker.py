"""Running the stream processors in the current process.

:func:`run_worker` blocks until SIGINT/SIGTERM (faust's worker installs the
handlers and stops gracefully: agents finish, acked offsets are committed), then
releases the stages' connections. It never starts faust's web server: the
equivalent faust command line would be ``faust -A ... worker --without-web``.
WorkerMetrics can be served on a loopback port with ``metrics_port``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from mode import Service

from crossfeed.core.settings import Settings
from crossfeed.encoders.base import Embedder
from crossfeed.indexer.base import VectorIndex
from crossfeed.streams.app import create_app
from crossfeed.streams.exceptions import WorkerError
from crossfeed.streams.metrics import WorkerMetrics
from crossfeed.streams.pipeline import STAGES, Pipeline, check_stages

log = logging.getLogger(__name__)


class _PipelineCloser(Service):
    """Started before the app and stopped after it, so stages close once agents are done."""

    def __init__(self, pipeline: Pipeline, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pipeline = pipeline

    async def on_stop(self) -> None:
        await self._pipeline.aclose()


def run_worker(
    settings: Settings,
    stages: Sequence[str] = STAGES,
    embedder: Embedder | None = None,
    index: VectorIndex | None = None,
    *,
    metrics: WorkerMetrics | None = None,
    metrics_port: int | None = None,
    loglevel: str = "info",
    **pipeline_kwargs: Any,
) -> None:
    """Run a faust worker for ``stages`` here until SIGINT/SIGTERM; blocks.

    ``embedder`` defaults to ``crossfeed.encoders.model.load_embedder(settings)``
    (loaded before the worker starts), ``index`` to ``MilvusIndex(settings.milvus)``.
    Must run in the main thread (signal handlers). Raises :class:`WorkerError`
    when the worker stops because of an error, naming the exception that crashed it
    (e.g. a stage's :class:`~crossfeed.exceptions.ConfigError`) when there is one.
    """
    import faust

    stages = check_stages(stages)
    if "embed" in stages and embedder is None:
        # Load now: a missing model is a configuration error the operator should see at
        # once, not a crash of the embed agent on its first batch.
        from crossfeed.encoders.model import load_embedder

        embedder = load_embedder(settings).load()
    metrics = metrics or WorkerMetrics()
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="127.0.0.1", registry=metrics.registry)
    datadir = settings.state.state_dir / "faust" / settings.stream.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        app = create_app(
            settings,
            stages=stages,
            embedder=embedder,
            index=index,
            metrics=metrics,
            **pipeline_kwargs,
        )
        closer = _PipelineCloser(app.crossfeed_pipeline, loop=loop)  # type: ignore[attr-defined]
        worker = faust.Worker(
            app,
            closer,
            loop=loop,
            loglevel=loglevel,
            quiet=True,
            redirect_stdouts=False,
            override_logging=False,
        )
        log.info(
            "stream worker %s (consumer group %s) starting: stages=%s broker=%s",
            settings.stream.app_id,
            app.conf.id,
            ",".join(stages),
            settings.kafka.bootstrap,
        )
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            if exc.code not in (0, None):
                # A crashed app (e.g. a stage's configuration error) leaves its reason here.
                cause = worker.crash_reason
                if cause is None:
                    raise WorkerError(f"stream worker stopped with status {exc.code}") from exc
                raise WorkerError(
                    f"stream worker stopped: {type(cause).__name__}: {cause}"
                ) from cause
    finally:
        asyncio.set_event_loop(None)
        if not loop.is_closed():
            loop.close()
