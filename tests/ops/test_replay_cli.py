"""``crossfeed replay``: the schedule (pure), pacing that stops on a signal, and the stream
on the real broker in order."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from crossfeed.core.schema import Post
from crossfeed.exceptions import InvalidInputError
from crossfeed.ops.data.replay import paced, schedule

T0 = datetime(2024, 11, 20, 10, 0, tzinfo=UTC)


def test_schedule_follows_created_at_at_the_given_speed() -> None:
    times = [T0, T0 + timedelta(seconds=10), T0 + timedelta(seconds=10), T0 + timedelta(seconds=70)]
    assert schedule(times, 1.0, None) == [0.0, 10.0, 10.0, 70.0]
    assert schedule(times, 10.0, None) == [0.0, 1.0, 1.0, 7.0]
    assert schedule(times, 10.0, 20.0) == [0.0, 1.0, 1.0, 3.0]  # the minute of silence: 20 s
    backwards = [T0, T0 - timedelta(seconds=5), T0 + timedelta(seconds=1)]
    assert schedule(backwards, 1.0, None) == [0.0, 0.0, 6.0]  # an older post goes at once
    for speed in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(InvalidInputError):
            schedule(times, speed, None)


def test_pacing_waits_and_stops_at_once() -> None:
    stop = threading.Event()
    lines = [b"a", b"b", b"c"]
    got: list[bytes] = []
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    for line in paced(lines, [0.0, 0.05, 30.0], stop):
        got.append(line)
    assert got == [b"a", b"b"]  # the third was due in 30 s; the stop ended the wait
    assert time.monotonic() - started < 5


def _post(i: int, seconds: float) -> Post:
    return Post(
        id=f"replay-{i}",
        source="replay-test",
        author="@me",
        created_at=T0 + timedelta(seconds=seconds),
        text=f"post {i}",
    )


@pytest.mark.integration
def test_replay_cli_streams_the_file_in_order(engines: Any, tmp_path: Path) -> None:
    from kafka.admin import KafkaAdminClient

    from crossfeed.core.settings import KafkaSettings

    topic = f"replay-{uuid.uuid4().hex[:10]}.posts.raw"
    path = tmp_path / "recorded.jsonl"
    posts = [_post(i, i * 2.0) for i in range(6)]
    path.write_text("".join(p.model_dump_json() + "\n" for p in posts))
    env = {**os.environ, "CROSSFEED_TOPIC_RAW": topic, "CROSSFEED_PARTITIONS": "1"}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "crossfeed.ops.cli", "replay", str(path), "--speed", "20"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert f"replayed 6 of 6 posts from {path} to {topic}" in done.stdout
        records = _consume(KafkaSettings().bootstrap, topic, 6)
        assert [r.key.decode() for r in records] == [p.id for p in posts]  # one partition
        assert [Post.model_validate_json(r.value) for r in records] == posts
        # A bad file sends nothing and says which line.
        bad = tmp_path / "bad.jsonl"
        bad.write_text(posts[0].model_dump_json() + "\n{nope\n")
        refused = subprocess.run(
            [sys.executable, "-m", "crossfeed.ops.cli", "replay", str(bad)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 1 and "bad.jsonl:2" in refused.stderr
    finally:
        admin = KafkaAdminClient(bootstrap_servers=KafkaSettings().bootstrap)
        with contextlib.suppress(Exception):  # best effort: the name is unique anyway
            admin.delete_topics([topic])
        admin.close()


def _consume(broker: str, topic: str, expected: int, timeout_s: float = 30.0) -> list[Any]:
    """From the start by partition assignment (end offsets are not trusted on the dev broker)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=[broker],
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
