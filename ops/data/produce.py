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
from typing import Any

from crossfeed.core.schema import Post
from crossfeed.core.settings import KafkaSettings
from crossfeed.exceptions import InvalidInputError
from crossfeed.ops.exceptions import ProduceError

log = logging.getLogger(__name__)

# Kafka's default message.max.bytes is ~1 MB; stay below it with room for headers.
MAX_MESSAGE_BYTES = 1_000_000
# Error code Kafka returns when CreateTopics names an existing topic.
_TOPIC_ALREADY_EXISTS = 36


def client_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """Connection arguments shared by kafka-python clients: servers and SASL, if set.

    With credentials, SASL/PLAIN runs over TLS (``SASL_SSL``): a password is never
    sent in clear text.
    """
    servers = [s.strip() for s in settings.bootstrap.split(",") if s.strip()]
    if not servers:
        raise InvalidInputError("KAFKA_BOOTSTRAP is empty")
    kwargs: dict[str, Any] = {"bootstrap_servers": servers}
    if settings.sasl_username:
        if settings.sasl_password is None:
            raise InvalidInputError("KAFKA_SASL_USERNAME is set but KAFKA_SASL_PASSWORD is not")
        kwargs.update(
            security_protocol="SASL_SSL",
            sasl_mechanism="PLAIN",
            sasl_plain_username=settings.sasl_username,
            sasl_plain_password=settings.sasl_password.get_secret_value(),
        )
    return kwargs


def bootstrap_timeout(client: type, timeout_s: float) -> dict[str, int]:
    """How long to wait for a first broker connection, when this kafka-python knows the
    option (3.x; 2.x has none and rejects unknown options). The 30 s default makes an
    unreachable broker slow to report."""
    if "bootstrap_timeout_ms" in getattr(client, "DEFAULT_CONFIG", {}):
        return {"bootstrap_timeout_ms": int(min(timeout_s, 10.0) * 1000)}
    return {}


def ensure_topics(
    settings: KafkaSettings, topics: Iterable[str] | None = None, *, timeout_s: float = 15.0
) -> list[str]:
    """Create ``topics`` (default: crossfeed's four) when missing; return those created.

    Partitions come from ``settings.partitions``; the replication factor is the broker's
    default; configs from ``settings.topic_configs`` (the clean topic is compacted). A
    topic that already exists (even one created concurrently) is fine and left as it is.
    """
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    names = list(
        topics
        if topics is not None
        else (
            settings.topic_raw,
            settings.topic_clean,
            settings.topic_vectors,
            settings.topic_deadletter,
        )
    )
    if settings.partitions < 1:
        raise InvalidInputError("CROSSFEED_PARTITIONS must be >= 1")
    for name in names:
        _check_topic_name(name)
    try:
        admin = KafkaAdminClient(
            client_id="crossfeed-admin",
            request_timeout_ms=int(timeout_s * 1000),
            **bootstrap_timeout(KafkaAdminClient, timeout_s),
            **client_kwargs(settings),
        )
    except KafkaError as exc:
        raise ProduceError(f"cannot reach Kafka at {settings.bootstrap}: {exc}") from exc
    try:
        existing = set(admin.list_topics())
        missing = [n for n in names if n not in existing]
        if not missing:
            return []
        response = admin.create_topics(
            {
                n: {
                    "num_partitions": settings.partitions,
                    "replication_factor": -1,
                    "configs": settings.topic_configs(n),
                }
                for n in missing
            },
            timeout_ms=int(timeout_s * 1000),
            raise_errors=False,
        )
        created = []
        for topic in response.get("topics", []):
            code = topic.get("error_code", 0)
            if code == 0:
                created.append(topic["name"])
            elif code != _TOPIC_ALREADY_EXISTS:
                raise ProduceError(
                    f"cannot create topic {topic['name']}: error {code} "
                    f"{topic.get('error_message') or ''}".rstrip()
                )
        if created:
            log.info("created topics %s (%d partitions)", created, settings.partitions)
        return created
    except KafkaError as exc:
        raise ProduceError(f"cannot create topics on {settings.bootstrap}: {exc}") from exc
    finally:
        admin.close()


def _check_topic_name(name: str) -> None:
    import re

    if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", name) or name in (".", ".."):
        raise InvalidInputError(f"invalid Kafka topic name {name!r}")


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
) -> int:
    """Send ``posts`` to ``topic`` (default ``settings.topic_raw``); return how many.

    Raises :class:`ProduceError` when the broker is unreachable or any post was not
    acknowledged (after flushing, so the count of failures is exact), and
    :class:`InvalidInputError` for a post larger than the message limit.
    """
    from kafka import KafkaProducer
    from kafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError
    from tqdm import tqdm

    topic = topic or settings.topic_raw
    _check_topic_name(topic)
    if create_topics:
        ensure_topics(settings, [topic])
    try:
        producer = KafkaProducer(
            client_id="crossfeed-produce",
            acks="all",
            linger_ms=linger_ms,
            max_request_size=MAX_MESSAGE_BYTES + 48_576,
            request_timeout_ms=15_000,
            delivery_timeout_ms=max(int(timeout_s * 1000), 15_000 + linger_ms),
            max_block_ms=int(timeout_s * 1000),
            **bootstrap_timeout(KafkaProducer, timeout_s),
            **client_kwargs(settings),
        )
    except KafkaError as exc:
        raise ProduceError(f"cannot reach Kafka at {settings.bootstrap}: {exc}") from exc

    failures: list[BaseException] = []
    sent = 0
    try:
        with tqdm(desc=f"produce {topic}", unit="post", disable=not progress) as bar:
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
