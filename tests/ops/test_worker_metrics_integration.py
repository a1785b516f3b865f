"""A real `crossfeed worker` answers /metrics with crossfeed's metrics, counting the
posts it actually processed (broker and Redis are real; normalize stage only, so no
model is loaded)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from crossfeed.ops.bench.report import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _metrics(port: int) -> str | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None


def test_a_running_worker_answers_metrics(
    private_deployment: Callable[[str], dict[str, str]], tmp_path: Path
) -> None:
    from kafka import KafkaProducer

    from crossfeed.core.settings import KafkaSettings, RedisSettings
    from crossfeed.streams.topics import ensure_topics

    env = private_deployment("wmetrics")
    port = free_port()
    ensure_topics(KafkaSettings())
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "crossfeed.ops.cli", "worker", "--stages", "normalize"],
        env={**os.environ, **env, "CROSSFEED_WORKER_METRICS_PORT": str(port)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while (body := _metrics(port)) is None and time.monotonic() < deadline:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(0.5)
        assert body is not None, "no /metrics within 60 s"
        assert "# TYPE crossfeed_posts_in_total counter" in body
        assert "crossfeed_deadletters_total" in body

        producer = KafkaProducer(bootstrap_servers=KafkaSettings().bootstrap, acks="all")
        post = {
            "id": "wm-1",
            "source": "itest",
            "author": "someone",
            "created_at": "2024-05-01T12:00:00Z",
            "text": "metrics please #Observability",
        }
        producer.send(env["CROSSFEED_TOPIC_RAW"], key=b"wm-1", value=json.dumps(post).encode())
        producer.send(env["CROSSFEED_TOPIC_RAW"], key=b"bad", value=b"{not json")
        producer.flush()
        producer.close()

        # Both posts read; the malformed one dead-lettered (at the parse step).
        want = (
            re.compile(r'^crossfeed_posts_in_total\{stage="normalize"\} 2\.0$', re.M),
            re.compile(r'^crossfeed_deadletters_total\{stage="\w+"\} 1\.0$', re.M),
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            body = _metrics(port) or ""
            if all(pattern.search(body) for pattern in want):
                break
            time.sleep(1)
        log_tail = (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
        for pattern in want:
            assert pattern.search(body), f"{pattern.pattern} missing:\n{body}\n{log_tail}"
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
        import redis
        from kafka.admin import KafkaAdminClient

        client = redis.Redis.from_url(RedisSettings().url.get_secret_value())
        keys = list(client.scan_iter(f"{env['CROSSFEED_REDIS_PREFIX']}:*"))
        if keys:
            client.delete(*keys)
        client.close()
        admin = KafkaAdminClient(bootstrap_servers=KafkaSettings().bootstrap)
        with contextlib.suppress(Exception):
            admin.delete_groups([env["CROSSFEED_APP_ID"]])
        admin.close()
