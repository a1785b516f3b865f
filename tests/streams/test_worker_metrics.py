"""A worker's Prometheus endpoint: the worker's own registry, at /metrics, or a clear
configuration error when its address cannot be bound."""

from __future__ import annotations

import socket

import httpx
import pytest

from crossfeed.exceptions import ConfigError
from crossfeed.ops.bench.report import free_port
from crossfeed.streams.metrics import WorkerMetrics
from crossfeed.streams.worker import serve_metrics


def test_serve_metrics_serves_the_workers_registry() -> None:
    metrics = WorkerMetrics()
    metrics.posts_in.labels(stage="normalize").inc(3)
    port = free_port()
    server = serve_metrics(metrics, port, "127.0.0.1")
    try:
        body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        server.shutdown()
        server.server_close()
    assert 'crossfeed_posts_in_total{stage="normalize"} 3.0' in body
    assert "crossfeed_indexed_rows_total" in body
    assert "python_gc_objects_collected_total" not in body  # not the global registry


def test_port_zero_serves_nothing() -> None:
    assert serve_metrics(WorkerMetrics(), 0, "127.0.0.1") is None


def test_a_port_in_use_is_a_configuration_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match="CROSSFEED_WORKER_METRICS_PORT"):
            serve_metrics(WorkerMetrics(), port, "127.0.0.1")
