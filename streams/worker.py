"""Running the stream processors in the current process.

:func:`run_worker` blocks until SIGINT/SIGTERM (faust's worker installs the
handlers and stops gracefully: agents finish, acked offsets are committed), then
releases the stages' connections. It never starts faust's web server: the
equivalent faust command line would be ``faust -A ... worker --without-web``.
Its :class:`WorkerMetrics` are served for Prometheus at ``/metrics`` on
``CROSSFEED_WORKER_METRICS_HOST:CROSSFEED_WORKER_METRICS_PORT`` (loopback by default;
port 0 = not served) for as long as the worker runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from mode import Service

from crossfeed.core.settings import Settings
from crossfeed.encoders.base import Embedder
from crossfeed.exceptions import ConfigError
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
    metrics_host: str | None = None,
    loglevel: str = "info",
    **pipeline_kwargs: Any,
) -> None:
    """Run a faust worker for ``stages`` here until SIGINT/SIGTERM; blocks.

    ``embedder`` defaults to ``crossfeed.encoders.model.load_embedder(settings)``
    (loaded before the worker starts), ``index`` to ``MilvusIndex(settings.milvus)``.
    ``metrics_port``/``metrics_host`` default to ``settings.stream.metrics_port``/``host``;
    with a port other than 0, ``metrics`` are served at ``/metrics`` there until the worker
    stops, and a port that cannot be bound is a :class:`ConfigError` raised before the
    worker joins its consumer group.
    Must run in the main thread (signal handlers). Raises :class:`WorkerError`
    when the worker stops because of an error, naming the exception that crashed it
    (e.g. a stage's :class:`~crossfeed.exceptions.ConfigError`) when there is one.
    """
    import faust

    stages = check_stages(stages)
    metrics = metrics or WorkerMetrics()
    # Bound first: a port in use fails at once, not after a model load.
    server = serve_metrics(
        metrics,
        settings.stream.metrics_port if metrics_port is None else metrics_port,
        settings.stream.metrics_host if metrics_host is None else metrics_host,
    )
    if "embed" in stages and embedder is None:
        # Load now: a missing model is a configuration error the operator should see at
        # once, not a crash of the embed agent on its first batch.
        from crossfeed.encoders.model import load_embedder

        embedder = load_embedder(settings).load()
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
        if server is not None:
            server.shutdown()
            server.server_close()


def serve_metrics(metrics: WorkerMetrics, port: int, host: str) -> Any:
    """Serve ``metrics`` at ``http://host:port/metrics`` from a daemon thread; return the
    server (``shutdown()`` stops it), or None when ``port`` is 0.

    Raises :class:`ConfigError` naming the settings when the address cannot be bound
    (in use, not an address of this host): a worker whose metrics nobody can scrape
    should not start silently.
    """
    if not port:
        return None
    from prometheus_client import start_http_server

    try:
        server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot serve worker metrics on {host}:{port} (CROSSFEED_WORKER_METRICS_HOST/"
            f"CROSSFEED_WORKER_METRICS_PORT): {exc}"
        ) from exc
    log.info("worker metrics on http://%s:%d/metrics", host, port)
    return server
