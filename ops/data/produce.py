"""Send posts to Kafka (``crossfeed produce FILE.jsonl``) and create the topics.

Messages are keyed by post id, so all versions of a post land on one partition
and stay in order. ``acks=all`` plus the idempotent producer means a post that
:func:`produce` reports as sent is on every in-sync replica, exactly once;
``linger_ms`` lets the client batch small posts into few requests. A delivery that
fails raises :class:`ProduceError` (``retriable``) after the buffer is flushed, so the
caller knows the run was incomplete; posts are never dropped silently.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from crossfeed.core.kafka import MAX_MESSAGE_BYTES, PRODUCER_MAX_REQUEST_BYTES, KafkaConnection
from crossfeed.core.schema import Post
from crossfeed.core.settings import KafkaSettings
from crossfeed.exceptions import InvalidInputError
from crossfeed.ops.exceptions import ProduceError
from crossfeed.streams.exceptions import TopicError
from crossfeed.streams.topics import check_topic_name, ensure_topics

__all__ = ["MAX_MESSAGE_BYTES", "ensure_topics", "produce"]

log = logging.getLogger(__name__)


def _encode(item: Post | bytes) -> tuple[bytes | None, bytes]:
    """(key, value) of one message. Bytes are sent as they are (already JSON)."""
    if isinstance(item, Post):
        return item.id.encode("utf-8"), item.model_dump_json(exclude_none=True).encode("utf-8")
    if isinstance(item, bytes | bytearray):
        value = bytes(item).strip()
        key = None
        try:
            obj = json.loads(value)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("id"), str) and obj["id"]:
            key = obj["id"].encode("utf-8")
        return key, value
    raise InvalidInputError(f"cannot produce a {type(item).__name__}; need a Post or bytes")


def produce(
    posts: Iterable[Post | bytes],
    settings: KafkaSettings,
    topic: str | None = None,
    *,
    progress: bool = True,
    create_topics: bool = True,
    linger_ms: int = 20,
    timeout_s: float = 60.0,
    total: int | None = None,
) -> int:
    """Send ``posts`` to ``topic`` (default ``settings.topic_raw``); return how many.

    Raises :class:`ProduceError` when the broker is unreachable or any post was not
    acknowledged (after flushing, so the count of failures is exact), and
    :class:`InvalidInputError` for a post larger than the message limit. ``total`` (when
    known) gives the progress bar its end.
    """
    from kafka import KafkaProducer
    from kafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError
    from tqdm import tqdm

    topic = topic or settings.topic_raw
    check_topic_name(topic)
    connection = KafkaConnection(settings)
    if create_topics:
        try:
            ensure_topics(settings, [topic])
        except TopicError as exc:
            raise ProduceError(str(exc)) from exc
    try:
        producer = KafkaProducer(
            client_id="crossfeed-produce",
            acks="all",
            linger_ms=linger_ms,
            max_request_size=PRODUCER_MAX_REQUEST_BYTES,
            request_timeout_ms=15_000,
            delivery_timeout_ms=max(int(timeout_s * 1000), 15_000 + linger_ms),
            max_block_ms=int(timeout_s * 1000),
            **connection.kafka_python(KafkaProducer, timeout_s=timeout_s),
        )
    except KafkaError as exc:
        raise ProduceError(f"cannot reach Kafka at {connection.bootstrap}: {exc}") from exc

    failures: list[BaseException] = []
    sent = 0
    try:
        with tqdm(desc=f"produce {topic}", unit="post", total=total, disable=not progress) as bar:
            for item in posts:
                if failures:
                    break  # stop early; the error is raised below after the flush
                key, value = _encode(item)
                if len(value) > MAX_MESSAGE_BYTES:
                    raise InvalidInputError(
                        f"post {key!r} is {len(value)} bytes; the limit is {MAX_MESSAGE_BYTES}"
                    )
                try:
                    future = producer.send(topic, key=key, value=value)
                except MessageSizeTooLargeError as exc:
                    raise InvalidInputError(f"post {key!r} is too large for Kafka: {exc}") from exc
                except KafkaTimeoutError as exc:
                    raise ProduceError(f"Kafka did not accept posts in time: {exc}") from exc
                future.add_errback(failures.append)
                sent += 1
                bar.update()
            try:
                producer.flush(timeout=timeout_s)
            except KafkaTimeoutError as exc:
                raise ProduceError(
                    f"Kafka did not acknowledge all {sent} posts within {timeout_s:.0f} s"
                ) from exc
    finally:
        producer.close(timeout=5)
    if failures:
        raise ProduceError(
            f"{len(failures)} of {sent} posts were not delivered to {topic}: {failures[0]}"
        )
    return sent


# --------------------------------------------------------------------------- CLI


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("produce", help="send posts from a JSON-lines file to Kafka")
    p.add_argument("file", type=Path, help="JSON lines, one post per line")
    p.add_argument("--topic", default=None, help="default posts.raw (CROSSFEED_TOPIC_RAW)")
    p.add_argument(
        "--no-validate",
        action="store_true",
        help="send lines as they are, even invalid ones (to exercise the dead-letter path)",
    )
    p.add_argument("--no-create-topics", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_produce)


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                yield line


def _validate_file(path: Path) -> int:
    """Check every line before sending anything: a bad file sends nothing."""
    from pydantic import ValidationError

    count = 0
    with path.open("rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            if len(line) > MAX_MESSAGE_BYTES:
                raise InvalidInputError(f"{path}:{lineno}: line is over {MAX_MESSAGE_BYTES} bytes")
            try:
                Post.model_validate_json(line)
            except ValidationError as exc:
                raise InvalidInputError(f"{path}:{lineno}: not a valid post: {exc}") from exc
            count += 1
    return count


def _cmd_produce(args: argparse.Namespace) -> int:
    path: Path = args.file.expanduser()
    if not path.is_file():
        raise InvalidInputError(f"{path} is not a file")
    settings = KafkaSettings()
    if not args.no_validate:
        count = _validate_file(path)
        log.info("%s: %d valid posts", path, count)
    progress = not args.no_progress and sys.stderr.isatty()
    sent = produce(
        _lines(path),
        settings,
        args.topic,
        progress=progress,
        create_topics=not args.no_create_topics,
    )
    print(f"produced {sent} posts from {path} to {args.topic or settings.topic_raw}")
    return 0
