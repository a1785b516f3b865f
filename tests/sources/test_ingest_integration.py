"""``crossfeed ingest bluesky|mastodon`` as processes, against the replay servers, producing
to the real broker: posts keyed by id, tombstones with null values, dead letters; a
signal stops them cleanly (exit 0) after flushing; ``crossfeed status`` and the metrics
endpoint show their liveness meanwhile."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from crossfeed.core.schema import DeadLetter, Post
from crossfeed.core.settings import KafkaSettings
from crossfeed.sources.state import read_json

pytestmark = pytest.mark.integration


@pytest.fixture
def deployment(engines: Any, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a private deployment: its own topics and state directory."""
    from kafka.admin import KafkaAdminClient

    suffix = uuid.uuid4().hex[:10]
    env = {
        **os.environ,
        "CROSSFEED_TOPIC_RAW": f"sources-{suffix}.posts.raw",
        "CROSSFEED_TOPIC_DEADLETTER": f"sources-{suffix}.posts.deadletter",
        "CROSSFEED_PARTITIONS": "1",
        "CROSSFEED_STATE_DIR": str(tmp_path / "state"),
    }
    env.pop("MASTODON_ACCESS_TOKEN", None)
    yield env
    admin = KafkaAdminClient(bootstrap_servers=KafkaSettings().bootstrap)
    with contextlib.suppress(Exception):  # best effort: the names are unique anyway
        admin.delete_topics([env["CROSSFEED_TOPIC_RAW"], env["CROSSFEED_TOPIC_DEADLETTER"]])
    admin.close()


def _consume(topic: str, expected: int, timeout_s: float = 30.0) -> list[Any]:
    """From the start by partition assignment (end offsets are not trusted on the dev broker)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=[KafkaSettings().bootstrap],
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "crossfeed.ops.cli", *args],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def _wait_for_status(
    env: dict[str, str], proc: subprocess.Popen[bytes], log: Path, done: Callable[[dict], bool]
) -> dict[str, Any]:
    folder = Path(env["CROSSFEED_STATE_DIR"]) / "sources"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for path in folder.glob("*.status.json"):
            status = read_json(path)
            if status and done(status):
                return status
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"the connector did not get there; its log:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes], sig: signal.Signals, log: Path) -> str:
    proc.send_signal(sig)
    try:
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text()
    assert code == 0, output[-3000:]
    return output


def test_ingest_bluesky_to_the_broker_and_stop_on_sigterm(
    jetstream: Callable[..., Any], deployment: dict[str, str], tmp_path: Path
) -> None:
    server = jetstream()  # the whole session, then an open, quiet connection
    log = tmp_path / "bluesky.log"
    proc = _start(
        ["ingest", "bluesky", "--url", server.url, "--metrics-port", "0"], deployment, log
    )
    try:
        status = _wait_for_status(deployment, proc, log, lambda s: s["counts"].get("post", 0) >= 25)
        shown = subprocess.run(
            [sys.executable, "-m", "crossfeed.ops.cli", "status"],
            env=deployment,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        assert f"running (pid {proc.pid}), connected" in shown and "25 posts, 1 deletes" in shown
        metrics = httpx.get(status["metrics_url"], timeout=5).text
        assert 'crossfeed_source_seconds_since_event{source="bluesky"}' in metrics
        assert 'crossfeed_source_events_total{kind="post",source="bluesky"} 25.0' in metrics
        output = _stop(proc, signal.SIGTERM, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "bluesky: stopped: " in output and "25 post" in output

    records = _consume(deployment["CROSSFEED_TOPIC_RAW"], 26)
    assert len(records) == 26
    tombstones = [r for r in records if r.value is None]
    posts = [Post.model_validate_json(r.value) for r in records if r.value is not None]
    assert len(posts) == 25
    assert all(r.key.decode() == json.loads(r.value)["id"] for r in records if r.value)
    assert [t.key.decode() for t in tombstones] == [posts[0].id]  # the delete of post 1
    assert {p.source for p in posts} == {"bluesky"}
    letters = _consume(deployment["CROSSFEED_TOPIC_DEADLETTER"], 2)
    assert [DeadLetter.model_validate_json(r.value).stage for r in letters] == ["parse", "parse"]
    # Flushed, then the cursor saved and the status marked stopped.
    folder = Path(deployment["CROSSFEED_STATE_DIR"]) / "sources"
    [cursor] = list(folder.glob("bluesky-*.cursor.json"))
    assert read_json(cursor)["cursor"] == json.loads(server.frames[-1])["time_us"]  # type: ignore[index]
    [status_file] = list(folder.glob("bluesky-*.status.json"))
    assert read_json(status_file)["running"] is False  # type: ignore[index]


def test_ingest_mastodon_to_the_broker_and_stop_on_sigint(
    mastodon: Callable[..., Any], token: str, deployment: dict[str, str], tmp_path: Path
) -> None:
    replay, url = mastodon()
    log = tmp_path / "mastodon.log"
    args = ["ingest", "mastodon", "--url", url, "--metrics-port", "-1"]
    refused = subprocess.run(
        [sys.executable, "-m", "crossfeed.ops.cli", *args],
        env=deployment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and "MASTODON_ACCESS_TOKEN" in refused.stderr
    proc = _start(args, {**deployment, "MASTODON_ACCESS_TOKEN": token}, log)
    try:
        _wait_for_status(deployment, proc, log, lambda s: s["counts"].get("post", 0) >= 20)
        output = _stop(proc, signal.SIGINT, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert token not in output  # never logged
    records = _consume(deployment["CROSSFEED_TOPIC_RAW"], 21)
    keys = [r.key.decode() for r in records]
    assert len(records) == 21
    host = url.split("//")[1]
    assert keys.count(f"mastodon:{host}:113500000000000002") == 2  # the status and its edit
    [tombstone] = [r for r in records if r.value is None]
    assert tombstone.key.decode() == f"mastodon:{host}:113500000000000001"
    assert len(replay.streams) == 1
