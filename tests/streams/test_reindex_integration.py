"""``crossfeed reindex`` against the real broker and Milvus.

Clean posts (text-only, some with inline PNGs, a repost, a malformed message)
go to a unique clean topic; a run with a hashing embedder of version "hash-v2"
back-fills the default collection for that version. A second run in the same
group finds nothing left (offsets were committed), a third in a new group
re-reads everything and leaves the same rows (upserts by row id).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from crossfeed.core.kafka import KafkaConnection
from crossfeed.core.schema import CleanPost, DeadLetter, Post
from crossfeed.core.settings import Settings
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.indexer.base import SearchFilter
from crossfeed.indexer.collections import default_collection
from crossfeed.indexer.milvus import MilvusIndex
from crossfeed.ops.data.produce import ensure_topics, produce
from crossfeed.streams.exceptions import ReindexError
from crossfeed.streams.reindex import default_group, run_reindex

pytestmark = pytest.mark.integration

POSTS = 30
DIM = 32
VERSION = "hash-v2"


@pytest.fixture
def reindex_settings(engines: object, unique_name: Callable[[str], str]) -> Iterator[Settings]:
    from kafka import KafkaAdminClient

    name = unique_name("reindex")
    settings = Settings()
    settings.kafka = settings.kafka.model_copy(
        update={
            "topic_clean": f"{name}.posts.clean",
            "topic_vectors": f"{name}.posts.vectors",
            "topic_deadletter": f"{name}.posts.deadletter",
            "partitions": 2,
            "session_timeout_s": 6.0,
        }
    )
    settings.milvus = settings.milvus.model_copy(update={"collection": name})
    settings.stream = settings.stream.model_copy(update={"app_id": name})
    topics = [settings.kafka.topic_clean, settings.kafka.topic_deadletter]
    ensure_topics(settings.kafka, topics)
    try:
        yield settings
    finally:
        admin = KafkaAdminClient(**KafkaConnection(settings.kafka).kafka_python())
        with contextlib.suppress(Exception):  # best effort; the names are unique anyway
            admin.delete_topics(topics)
        with contextlib.suppress(Exception):
            groups = [f"{name}-reindex-{g}" for g in ("a", "b")]
            admin.delete_groups([*groups, default_group(name, VERSION)])
        admin.close()
        target = settings.milvus.model_copy(
            update={"collection": default_collection(name, VERSION)}
        )
        index = MilvusIndex(target)
        try:
            index.drop()
        finally:
            index.close()


def _clean(post: dict[str, Any], duplicate_of: str | None = None) -> bytes:
    p = Post.model_validate(post)
    clean = CleanPost(
        post=p,
        clean_text=p.text,
        hashtags=list(p.tags),
        content_hash=hashlib.sha256(p.text.encode()).hexdigest(),
        duplicate_of=duplicate_of,
        received_at=datetime(2024, 5, 1, 12, tzinfo=UTC),
    )
    return clean.model_dump_json().encode()


def _messages(
    prefix: str, png: Callable[..., bytes], b64: Callable[[bytes], str]
) -> tuple[list[bytes], set[str]]:
    messages, rows = [], set()
    for i in range(POSTS):
        pid = f"{prefix}-{i}"
        post: dict[str, Any] = {
            "id": pid,
            "source": "itest",
            "author": f"user{i % 4}",
            "created_at": "2024-05-01T12:00:00Z",
            "text": f"reindexed post {i} about subject{i} #topic{i % 3}",
            "tags": [f"topic{i % 3}"],
        }
        rows.add(f"{pid}:text:0")
        if i % 5 == 0:
            image = png(((i * 37) % 256, (i * 11) % 256, 90))
            post["media"] = [{"kind": "image", "data_base64": b64(image)}]
            rows.add(f"{pid}:image:1")
        messages.append(_clean(post))
    repost = {**json.loads(messages[1])["post"], "id": f"{prefix}-repost"}
    messages.append(_clean(repost, duplicate_of=f"{prefix}-1"))  # no rows of its own
    messages.append(b'{"not": "a clean post"}')  # dead-lettered
    return messages, rows


def _read_deadletters(settings: Settings, expected: int) -> list[DeadLetter]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        settings.kafka.topic_deadletter,
        group_id=None,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
        **KafkaConnection(settings.kafka).kafka_python(),
    )
    try:
        values = [m.value for m in consumer]
    finally:
        consumer.close()
    assert len(values) == expected
    return [DeadLetter.model_validate_json(v) for v in values]


def test_reindex_backfills_the_version_collection_idempotently(
    reindex_settings: Settings, png: Callable[..., bytes]
) -> None:
    import base64

    settings = reindex_settings
    name = settings.milvus.collection
    messages, expected = _messages(name, png, lambda b: base64.b64encode(b).decode())
    produce(messages, settings.kafka, settings.kafka.topic_clean, progress=False)
    embedder = HashingEmbedder(dim=DIM, version=VERSION)

    def run(group: str) -> Any:
        return run_reindex(
            settings,
            VERSION,
            group=f"{name}-reindex-{group}",
            embedder=embedder,
            idle_s=2.0,
            batch_size=8,
            join_timeout_s=30.0,
        )

    first = run("a")
    target = default_collection(name, VERSION)
    assert first.collection == target and first.model_version == VERSION
    assert first.posts == len(messages)
    assert (first.duplicates_skipped, first.deadletters, first.skipped) == (1, 1, 0)
    assert first.rows_written == len(expected)
    assert first.collection_rows == len(expected)
    assert first.switch_env == f"CROSSFEED_MODEL_VERSION={VERSION} CROSSFEED_COLLECTION={target}"

    index = MilvusIndex(
        settings.milvus.model_copy(update={"collection": target}), consistency_level="Strong"
    )
    try:
        index.ensure_ready(DIM)
        stored = [row for i in range(POSTS) for row in index.get_post(f"{name}-{i}")]
        assert {row.row_id for row in stored} == expected
        assert {row.model_version for row in stored} == {VERSION}
        assert index.get_post(f"{name}-repost") == []
        query = embedder.embed_texts(["reindexed post 17 about subject17"])[0]
        hits = index.search([float(x) for x in query], 3, SearchFilter(modalities=("text",)))
        assert hits and hits[0].row.post_id == f"{name}-17"
    finally:
        index.close()
    [letter] = _read_deadletters(settings, 1)
    assert letter.stage == "embed" and "invalid clean post" in letter.reason

    again = run("a")  # same group: everything was committed
    assert (again.posts, again.rows_written, again.collection_rows) == (0, 0, len(expected))

    other = run("b")  # a new group re-reads all; upserts by row id change nothing
    assert other.posts == len(messages) and other.rows_written == len(expected)
    assert other.collection_rows == len(expected)

    # A head of another dimension cannot write the collection: refused before any batch.
    with pytest.raises(ReindexError, match=r"cannot prepare collection .* \(16 dims\)"):
        run_reindex(settings, VERSION, embedder=HashingEmbedder(dim=16, version=VERSION))
