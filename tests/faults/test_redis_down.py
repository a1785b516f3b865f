"""Redis killed mid-stream and started again, on the private engines: every post is still
indexed, searches answer throughout (uncached, marked degraded, while Redis is away) and
are cached again once it is back. Run: ``pytest -m fault -s tests/faults -k redis``."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest
from fastapi.testclient import TestClient

pytestmark = [pytest.mark.fault, pytest.mark.integration, pytest.mark.slow]


def _search(client: TestClient, tally: Counter[str]) -> dict[str, Any] | None:
    r = client.post("/v1/search", json={"text": "fault test post about topic 3", "top_k": 5})
    tally[f"status_{r.status_code}"] += 1
    if r.status_code != 200:
        return None
    body: dict[str, Any] = r.json()
    tally["cached" if body["cached"] else "uncached"] += 1
    if body["degraded"]:
        tally["degraded"] += 1
    return body


def test_redis_killed_mid_stream_search_degrades_workers_index_everything(
    deployment: Any,
) -> None:
    from crossfeed.api.app import create_app
    from crossfeed.encoders.testing import HashingEmbedder

    from .conftest import DIM

    d = deployment
    worker = d.start_worker()
    settings = d.settings()
    settings.redis.breaker_reset_s = 2.0
    settings.live.lag_refresh_s = 0
    ids: list[str] = []
    producer = threading.Thread(target=lambda: ids.extend(d.produce(3000, per_s=120.0)))
    producer.start()
    before: Counter[str] = Counter()
    during: Counter[str] = Counter()
    after: Counter[str] = Counter()
    with TestClient(create_app(settings, embedder=HashingEmbedder(dim=DIM))) as client:
        at_kill = d.wait_growth(0, by=300)
        # The stream moves the epoch after every batch: a repeat is cached when no batch
        # landed between the two searches.
        for _ in range(50):
            _search(client, before)
            warm = _search(client, before)
            if warm is not None and warm["cached"]:
                break
        assert warm is not None and warm["cached"] and not warm["degraded"], before

        d.kill_engine("redis")
        down_at = time.monotonic()
        slowest = 0.0
        while time.monotonic() - down_at < 8.0:
            started = time.monotonic()
            body = _search(client, during)
            slowest = max(slowest, time.monotonic() - started)
            assert body is not None and body["degraded"] == ["cache"] and not body["cached"]
            time.sleep(0.1)
        rows_during = len(d.rows())
        restart_s = d.restart_engine("redis")

        back_at = time.monotonic()
        cached_again_s = None
        while time.monotonic() - back_at < 60.0:
            body = _search(client, after)
            if body is not None and body["cached"] and not body["degraded"]:
                cached_again_s = round(time.monotonic() - back_at, 1)
                break
            time.sleep(0.5)
        producer.join()
        expected = {f"{i}:text:0" for i in ids}
        rows = d.wait_rows(expected, timeout_s=300)
        # After the stream: a fresh search is cached under the epoch the workers moved on.
        final = [_search(client, after) for _ in range(2)]
    counts = Counter(rows)
    lost = sorted(expected - set(rows))
    duplicated = [r for r, n in counts.items() if n > 1]
    d.report(
        "redis kill -9 + restart",
        posts=len(expected),
        rows=len(rows),
        lost=len(lost),
        duplicated=len(duplicated),
        rows_at_kill=at_kill,
        rows_indexed_while_down=rows_during - at_kill,
        searches_while_down=sum(v for k, v in during.items() if k.startswith("status_")),
        degraded_answers=during["degraded"],
        non_200_while_down=sum(
            v for k, v in during.items() if k.startswith("status_") and k != "status_200"
        ),
        slowest_search_while_down_s=round(slowest, 3),
        redis_restart_s=round(restart_s, 1),
        cached_again_after_s=cached_again_s,
    )
    assert worker.poll() is None, d.logs()
    assert not lost, f"{len(lost)} lost, e.g. {lost[:5]}\n{d.logs()}"
    assert not duplicated
    assert rows_during > at_kill, "nothing was indexed while Redis was down"
    assert during["status_200"] == during["degraded"] > 0
    assert cached_again_s is not None, (after, d.logs())
    assert final[1] is not None and final[1]["cached"] and not final[1]["degraded"]
    logs = d.logs(tail=10**7)
    # Said once per outage, not once per post; and the owed epoch bump was paid.
    assert logs.count("posts go on without repost or erasure checks") == 1, logs[-5000:]
    assert "paid the epoch bump owed since the outage" in logs, logs[-5000:]
