"""The whole stream pipeline against the real engines: broker, Redis, Milvus.

Every test uses its own topics, consumer group, Redis prefix and Milvus
collection (random suffix), runs the worker as a subprocess (with the hashing
embedder, so it is fast) and cleans up after itself.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from crossfeed.core.schema import DeadLetter
from crossfeed.core.settings import MilvusSettings, RedisSettings, Settings
from crossfeed.indexer.milvus import MilvusIndex

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
PARTITIONS = 4
DIM = 32

_WORKER = """
import logging
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.core.settings import Settings
from crossfeed.streams.worker import run_worker
run_worker(Settings(), embedder=HashingEmbedder(dim={dim}))
"""


@dataclass
class Env:
    suffix: str
    tmp: Path
    media_root: Path
    topics: dict[str, str]
    collection: str
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def worker_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP": BOOTSTRAP,
            "CROSSFEED_TOPIC_RAW": self.topics["raw"],
            "CROSSFEED_TOPIC_CLEAN": self.topics["clean"],
            "CROSSFEED_TOPIC_VECTORS": self.topics["vectors"],
            "CROSSFEED_TOPIC_DEADLETTER": self.topics["deadletter"],
            "CROSSFEED_PARTITIONS": str(PARTITIONS),
            "CROSSFEED_KAFKA_SESSION_TIMEOUT": "6",
            "CROSSFEED_APP_ID": f"crossfeed-streams-{self.suffix}",
            "CROSSFEED_COLLECTION": self.collection,
            "CROSSFEED_REDIS_PREFIX": f"crossfeed-streams-{self.suffix}",
            "CROSSFEED_STATE_DIR": str(self.tmp / "state"),
            "CROSSFEED_MEDIA_ROOTS": json.dumps([str(self.media_root)]),
            "CROSSFEED_BATCH_SIZE": "32",
            "CROSSFEED_BATCH_WAIT": "0.3",
        }

    def settings(self) -> Settings:
        """The settings the worker runs with, for an in-process API on the same names."""
        saved = dict(os.environ)
        os.environ.update({k: v for k, v in self.worker_env.items() if k.startswith("CROSSFEED_")})
        try:
            return Settings()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def start_worker(self) -> subprocess.Popen:
        log = (self.tmp / f"worker-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER.format(dim=DIM)],
            env=self.worker_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def worker_logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n" + p.read_text(errors="replace")[-4000:]
            for p in sorted(self.tmp.glob("worker-*.log"))
        )


@pytest.fixture
def env(tmp_path: Path, engines: object) -> Iterator[Env]:
    from kafka.admin import KafkaAdminClient, NewTopic

    suffix = uuid.uuid4().hex[:8]
    topics = {
        name: f"crossfeed-streams-{suffix}.posts.{name}"
        for name in ("raw", "clean", "vectors", "deadletter")
    }
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    admin.create_topics(
        [NewTopic(t, num_partitions=PARTITIONS, replication_factor=1) for t in topics.values()]
    )
    media_root = tmp_path / "media"
    media_root.mkdir()
    e = Env(suffix, tmp_path, media_root, topics, f"crossfeed_streams_{suffix}")
    try:
        yield e
    finally:
        for proc in e.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        with contextlib.suppress(Exception):  # best effort; the names are unique anyway
            admin.delete_topics(list(topics.values()))
        with contextlib.suppress(Exception):
            admin.delete_groups([f"crossfeed-streams-{suffix}"])
        admin.close()
        import redis

        client = redis.Redis.from_url(RedisSettings().url.get_secret_value())
        keys = list(client.scan_iter(f"crossfeed-streams-{suffix}:*"))
        if keys:
            client.delete(*keys)
        client.close()
        index = MilvusIndex(MilvusSettings(CROSSFEED_COLLECTION=e.collection))
        try:
            index.drop()
        finally:
            index.close()


# --------------------------------------------------------------------------- the stream


@dataclass
class Stream:
    messages: list[tuple[str, bytes]]  # (key, value) to produce, in order
    expected_rows: set[str]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def build_stream(env: Env, count: int, make_png: Callable[..., bytes], video: bytes) -> Stream:
    """``count`` valid posts cycling text / inline image / inline video / image by path."""
    messages: list[tuple[str, bytes]] = []
    rows: set[str] = set()
    for i in range(count):
        pid = f"{env.suffix}-{i}"
        post: dict[str, Any] = {
            "id": pid,
            "source": "itest",
            "author": f"user{i % 7}",
            "created_at": "2024-05-01T12:00:00Z",
            "text": f"Post number {i} about topic {i % 11} #Topic{i % 5}",
        }
        kind = i % 4
        if kind == 1:
            png = make_png((i % 256, (i * 7) % 256, (i * 13) % 256))
            post["media"] = [{"kind": "image", "data_base64": _b64(png)}]
        elif kind == 2:
            post["media"] = [{"kind": "video", "data_base64": _b64(video)}]
        elif kind == 3:
            name = f"img-{i}.png"
            (env.media_root / name).write_bytes(make_png(((i * 3) % 256, 10, 200)))
            post["media"] = [{"kind": "image", "path": name}]
        messages.append((pid, json.dumps(post).encode()))
        rows.add(f"{pid}:text:0")
        if kind == 1 or kind == 3:
            rows.add(f"{pid}:image:1")
        elif kind == 2:
            rows.add(f"{pid}:video:1")
    return Stream(messages, rows)


def produce(messages: list[tuple[str, bytes]], topic: str, pace_s: float = 0.0) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5)
    for key, value in messages:
        producer.send(topic, key=key.encode(), value=value)
        if pace_s:
            time.sleep(pace_s)
    producer.flush()
    producer.close()


def row_ids(collection: str) -> list[str]:
    """Every row id in the collection (strongly consistent), duplicates included."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=MilvusSettings().uri)
    try:
        if not client.has_collection(collection):
            return []
        it = client.query_iterator(
            collection,
            batch_size=1000,
            filter="",
            output_fields=["row_id"],
            consistency_level="Strong",
        )
        out: list[str] = []
        while batch := it.next():
            out.extend(r["row_id"] for r in batch)
        it.close()
        return out
    finally:
        client.close()


def count_rows(collection: str) -> int:
    """Rows in the collection (strongly consistent); -1 while it is not ready."""
    from pymilvus import MilvusClient, MilvusException
    from pymilvus.client.types import LoadState

    client = MilvusClient(uri=MilvusSettings().uri)
    try:
        if not client.has_collection(collection):
            return -1
        if client.get_load_state(collection).get("state") != LoadState.Loaded:
            return -1
        res = client.query(
            collection, filter="", output_fields=["count(*)"], consistency_level="Strong"
        )
        return int(res[0]["count(*)"])
    except MilvusException:  # created but not loaded yet
        return -1
    finally:
        client.close()


def wait_for_rows(env: Env, expected: int, timeout: float = 180.0) -> float:
    """Seconds until the collection holds ``expected`` rows; fails with worker logs."""
    start = time.monotonic()
    seen = -1
    while time.monotonic() - start < timeout:
        seen = count_rows(env.collection)
        if seen >= expected:
            return time.monotonic() - start
        for proc in env.procs[-1:]:
            assert proc.poll() is None, f"worker exited:\n{env.worker_logs()}"
        time.sleep(0.5)
    raise AssertionError(f"{seen}/{expected} rows after {timeout}s\n{env.worker_logs()}")


def read_topic(topic: str, expected: int, timeout: float = 60.0) -> list[bytes]:
    """Values on ``topic`` from the start, until ``expected`` arrived and it went quiet.

    Consumes instead of asking for end offsets: some dev brokers under-report them.
    """
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=BOOTSTRAP,
        group_id=None,
        auto_offset_reset="earliest",
        consumer_timeout_ms=2000,
    )
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            before = len(values)
            values.extend(message.value for message in consumer)
            if len(values) >= expected and len(values) == before:
                break
    finally:
        consumer.close()
    return values


def read_deadletters(topic: str, expected: int) -> list[DeadLetter]:
    return [DeadLetter.model_validate_json(v) for v in read_topic(topic, expected)]


def assert_searchable_through_api(env: Env, count: int) -> None:
    """Every post is found by a text query through the API; a repeat is a cache hit."""
    from fastapi.testclient import TestClient

    from crossfeed.api.app import create_app
    from crossfeed.encoders.testing import HashingEmbedder

    settings = env.settings()
    app = create_app(settings, embedder=HashingEmbedder(dim=DIM))
    missing = []
    with TestClient(app) as client:
        for i in range(count):
            body = {
                "text": f"post number {i} about topic {i % 11}",
                "top_k": 10,
                "filters": {"modalities": ["text"]},
            }
            r = client.post("/v1/search", json=body)
            assert r.status_code == 200, r.text
            if f"{env.suffix}-{i}" not in [hit["id"] for hit in r.json()["results"]]:
                missing.append(i)
        assert not missing, f"posts not found by their text: {missing[:20]}"
        first = client.post("/v1/search", json={"text": "topic 3 post", "top_k": 5})
        again = client.post("/v1/search", json={"text": "topic 3 post", "top_k": 5})
        assert first.json()["cached"] is False
        assert again.json()["cached"] is True
        assert again.json()["results"] == first.json()["results"]
        assert client.get(f"/v1/posts/{env.suffix}-2").json()["items"][1]["modality"] == "video"


# --------------------------------------------------------------------------- tests


def _repost(message: bytes, new_id: str) -> tuple[str, bytes]:
    """The same content under another id: a repost, which gets no rows of its own."""
    return new_id, json.dumps({**json.loads(message), "id": new_id}).encode()


def _bad_post(post_id: str, kind: str, data: bytes) -> tuple[str, bytes]:
    post = {
        "id": post_id,
        "source": "itest",
        "author": "mallory",
        "created_at": "2024-05-01T12:00:00Z",
        "text": f"a post with a broken {kind}",
        "media": [{"kind": kind, "data_base64": _b64(data)}],
    }
    return post_id, json.dumps(post).encode()


def test_mixed_stream_reaches_milvus_and_bad_posts_reach_deadletter(env: Env, png, mp4) -> None:  # type: ignore[no-untyped-def]
    video = mp4(frames=8)
    stream = build_stream(env, 320, png, video)
    reposts = [_repost(stream.messages[i][1], f"{env.suffix}-repost-{i}") for i in range(4)]
    bad_image_id, bad_video_id = f"{env.suffix}-bad-image", f"{env.suffix}-bad-video"
    bad = [
        ("bad-json", b'{"id": "bad-json", "text": '),
        _bad_post(bad_image_id, "image", png()[:40]),
        _bad_post(bad_video_id, "video", b"\x00\x00\x00\x18ftypmp42" + bytes(200)),
    ]

    worker = env.start_worker()
    # Warm up (group join, collection creation) so the timing below is the pipeline's.
    warm, rest = stream.messages[:1], stream.messages[1:]
    produce(warm, env.topics["raw"])
    wait_for_rows(env, 1, timeout=120)
    t0 = time.monotonic()
    mixed = rest[:100] + bad[:1] + rest[100:200] + bad[1:] + reposts + rest[200:]
    produce(mixed, env.topics["raw"])
    elapsed = time.monotonic() - t0 + wait_for_rows(env, len(stream.expected_rows))
    rate = len(mixed) / elapsed
    print(f"\nthroughput: {len(mixed)} posts in {elapsed:.1f}s = {rate:.0f} posts/s end to end")

    letters = read_deadletters(env.topics["deadletter"], expected=3)
    by_reason = {(d.stage, d.post_id): d.reason for d in letters}
    assert set(by_reason) == {("parse", None), ("decode", bad_image_id), ("decode", bad_video_id)}
    assert "malformed JSON" in by_reason[("parse", None)]
    assert "image" in by_reason[("decode", bad_image_id)]
    assert "video" in by_reason[("decode", bad_video_id)]
    time.sleep(2)  # anything late (a repost wrongly embedded) would show up now
    ids = row_ids(env.collection)
    assert sorted(ids) == sorted(stream.expected_rows)
    assert_searchable_through_api(env, count=320)
    worker.send_signal(signal.SIGTERM)  # a clean stop: exit status 0, promptly
    assert worker.wait(timeout=60) == 0, env.worker_logs()


def test_killing_the_worker_mid_stream_loses_and_duplicates_nothing(env: Env, png, mp4) -> None:  # type: ignore[no-untyped-def]
    stream = build_stream(env, 400, png, mp4(frames=4))
    first = env.start_worker()
    # Warm up (group join, collection creation), then stream steadily for ~10 s.
    produce(stream.messages[:1], env.topics["raw"])
    wait_for_rows(env, 1, timeout=120)
    producer = threading.Thread(
        target=produce, args=(stream.messages[1:], env.topics["raw"]), kwargs={"pace_s": 0.025}
    )
    producer.start()
    # Kill it hard (no graceful commit) once part of the stream is indexed.
    wait_for_rows(env, len(stream.expected_rows) // 4, timeout=120)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert producer.is_alive(), "the stream finished before the kill"
    killed_at = len(row_ids(env.collection))
    env.start_worker()
    producer.join()
    wait_for_rows(env, len(stream.expected_rows))
    time.sleep(3)  # let replays of uncommitted batches land, if any
    ids = row_ids(env.collection)
    assert len(ids) == len(set(ids)), "duplicate rows"
    assert set(ids) == stream.expected_rows, "lost or unexpected rows"
    # At-least-once: what the killed worker had done but not committed was redone.
    vectors = read_topic(env.topics["vectors"], len(stream.expected_rows))
    print(
        f"\nkilled at {killed_at} rows; {len(vectors)} vector records on the topic for "
        f"{len(stream.expected_rows)} rows ({len(vectors) - len(stream.expected_rows)} replayed)"
    )
    assert len(vectors) >= len(stream.expected_rows)


def test_untagged_media_get_suggested_tags_from_the_stream(env: Env, png) -> None:  # type: ignore[no-untyped-def]
    """The translation step: an untagged image is indexed with its neighbours' tags."""
    from fastapi.testclient import TestClient

    from crossfeed.api.app import create_app
    from crossfeed.encoders.testing import HashingEmbedder

    def image_post(pid: str, color: tuple[int, int, int], tags: list[str]) -> tuple[str, bytes]:
        post = {
            "id": pid,
            "source": "itest",
            "author": "bob",
            "created_at": "2024-05-01T12:00:00Z",
            "tags": tags,
            "media": [{"kind": "image", "data_base64": _b64(png(color))}],
        }
        return pid, json.dumps(post).encode()

    s = env.suffix
    tagged = [image_post(f"{s}-red-{i}", (230, 20 + i, 20), ["sunset"]) for i in range(6)] + [
        image_post(f"{s}-blue-{i}", (20, 20 + i, 230), ["ocean"]) for i in range(6)
    ]
    os.environ["CROSSFEED_SUGGEST_TAGS"] = "1"
    try:
        env.start_worker()
    finally:
        os.environ.pop("CROSSFEED_SUGGEST_TAGS")
    produce(tagged, env.topics["raw"])
    wait_for_rows(env, 24, timeout=120)  # a hashtag text row and an image row each
    time.sleep(6)  # the worker searches with bounded staleness: let the rows settle
    produce([image_post(f"{s}-untagged", (235, 25, 25), [])], env.topics["raw"])
    wait_for_rows(env, 25)

    settings = env.settings()
    with TestClient(create_app(settings, embedder=HashingEmbedder(dim=DIM))) as client:
        post = client.get(f"/v1/posts/{s}-untagged").json()
        assert post["tags"] == []
        [item] = post["items"]
        assert item["suggested_tags"] == ["sunset"], env.worker_logs()
        tagged_post = client.get(f"/v1/posts/{s}-red-0").json()
        assert all(i["suggested_tags"] == [] for i in tagged_post["items"])
