"""crossfeed's topics: the one place their names and broker configs are declared.

``posts.raw -> posts.clean -> posts.vectors``, plus ``posts.deadletter``. Names come
from :class:`~crossfeed.core.settings.KafkaSettings`; configs from here: ``posts.clean``
is compacted (``crossfeed reindex`` re-reads it, and a retention time would silently
leave old posts out of a back-filled collection). :func:`ensure_topics` creates them
through the admin API, the faust app declares them with the same configs, so whichever
comes first creates the same topic.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from crossfeed.core.kafka import KafkaConnection
from crossfeed.core.settings import KafkaSettings
from crossfeed.exceptions import InvalidInputError
from crossfeed.streams.exceptions import TopicError

log = logging.getLogger(__name__)

# Error code Kafka returns when CreateTopics names an existing topic.
_TOPIC_ALREADY_EXISTS = 36
_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)

    @property
    def compacted(self) -> bool:
        return self.configs.get("cleanup.policy") == "compact"


def check_topic_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name) or name in (".", ".."):
        raise InvalidInputError(f"invalid Kafka topic name {name!r}")
    return name


class Topics:
    """The four topics of one deployment, with their configs."""

    def __init__(self, settings: KafkaSettings) -> None:
        if settings.partitions < 1:
            raise InvalidInputError("CROSSFEED_PARTITIONS must be >= 1")
        self.settings = settings
        self.raw = check_topic_name(settings.topic_raw)
        self.clean = check_topic_name(settings.topic_clean)
        self.vectors = check_topic_name(settings.topic_vectors)
        self.deadletter = check_topic_name(settings.topic_deadletter)

    @property
    def names(self) -> tuple[str, str, str, str]:
        return (self.raw, self.clean, self.vectors, self.deadletter)

    def configs(self, name: str) -> dict[str, str]:
        """Broker configs ``name`` is created with (empty: the broker's defaults)."""
        if name == self.clean and self.settings.compact_clean_topic:
            return {"cleanup.policy": "compact"}
        return {}

    def spec(self, name: str) -> TopicSpec:
        return TopicSpec(check_topic_name(name), self.settings.partitions, self.configs(name))

    def specs(self) -> list[TopicSpec]:
        return [self.spec(n) for n in self.names]


def ensure_topics(
    settings: KafkaSettings, topics: Iterable[str] | None = None, *, timeout_s: float = 15.0
) -> list[str]:
    """Create ``topics`` (default: crossfeed's four) when missing; return those created.

    Partitions and configs come from :class:`Topics`; the replication factor is
    ``CROSSFEED_TOPIC_REPLICATION``, or the broker's default when that is 0. A topic that
    already exists (even one created concurrently) is fine and left as it is. Raises
    :class:`TopicError` (retriable) when the broker cannot be reached or refuses.
    """
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    declared = Topics(settings)
    specs = [declared.spec(n) for n in (topics if topics is not None else declared.names)]
    connection = KafkaConnection(settings)
    try:
        admin = KafkaAdminClient(
            client_id="crossfeed-admin",
            request_timeout_ms=int(timeout_s * 1000),
            **connection.kafka_python(KafkaAdminClient, timeout_s=timeout_s),
        )
    except KafkaError as exc:
        raise TopicError(f"cannot reach Kafka at {connection.bootstrap}: {exc}") from exc
    try:
        existing = set(admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if not missing:
            return []
        response = admin.create_topics(
            {
                s.name: {
                    "num_partitions": s.partitions,
                    "replication_factor": settings.replication_factor or -1,
                    "configs": s.configs,
                }
                for s in missing
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
                raise TopicError(
                    f"cannot create topic {topic['name']}: error {code} "
                    f"{topic.get('error_message') or ''}".rstrip()
                )
        if created:
            log.info("created topics %s (%d partitions)", created, settings.partitions)
        return created
    except KafkaError as exc:
        raise TopicError(f"cannot create topics on {connection.bootstrap}: {exc}") from exc
    finally:
        admin.close()
