"""Consumer lag per stage, from the broker: end offsets minus the group's committed offsets.

Only where the broker reports end offsets truthfully. Some Kafka-protocol brokers
(the local dev broker, tansu, among them) under-report ``ListOffsets``; a committed
offset above the end offset gives them away, and then the stage's lag is reported
as unknown with that reason instead of a wrong number. Without any committed offset
there is nothing to check against, so the lag is unknown too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from crossfeed.core.kafka import KafkaConnection
from crossfeed.core.settings import KafkaSettings

log = logging.getLogger(__name__)

UNDER_REPORTS = (
    "the broker reports end offsets below the group's committed offsets (it under-reports "
    "ListOffsets, as the local tansu broker does), so lag cannot be computed from them"
)


@dataclass(frozen=True)
class StageLag:
    stage: str
    topic: str
    lag: int | None
    reason: str | None = None


def stage_topics(kafka: KafkaSettings) -> dict[str, str]:
    """Each stage and the topic it consumes."""
    return {
        "normalize": kafka.topic_raw,
        "embed": kafka.topic_clean,
        "index": kafka.topic_vectors,
    }


def lag_from_offsets(
    stage: str, topic: str, ends: dict[int, int], committed: dict[int, int]
) -> StageLag:
    """Lag of one stage from per-partition end and committed offsets (pure)."""
    if not ends:
        return StageLag(stage, topic, None, "the topic has no partitions (not created yet)")
    if not committed:
        return StageLag(stage, topic, None, "the group has committed no offset on this topic yet")
    if any(committed.get(p, 0) > end for p, end in ends.items()):
        return StageLag(stage, topic, None, UNDER_REPORTS)
    return StageLag(stage, topic, sum(end - committed.get(p, 0) for p, end in ends.items()))


def measure_lag(kafka: KafkaSettings, group: str, timeout_s: float = 5.0) -> list[StageLag]:
    """Per-stage lag of consumer group ``group`` (blocking; a few admin RPCs)."""
    from kafka import KafkaAdminClient, TopicPartition
    from kafka.admin import OffsetSpec

    topics = stage_topics(kafka)
    admin = KafkaAdminClient(
        client_id="crossfeed-lag",
        request_timeout_ms=int(timeout_s * 1000),
        **KafkaConnection(kafka).kafka_python(),
    )
    try:
        partitions: dict[str, list[int]] = {}
        meta: Any = admin.describe_topics(list(topics.values()))
        for t in meta:  # field names differ between metadata versions
            name = t.get("name", t.get("topic"))
            if not t.get("error_code") and name:
                partitions[name] = [
                    int(p.get("partition_index", p.get("partition", -1)))
                    for p in t.get("partitions", [])
                ]
        specs = {
            TopicPartition(topic, p): OffsetSpec.LATEST
            for topic in topics.values()
            for p in partitions.get(topic, [])
        }
        ends_raw = admin.list_partition_offsets(specs) if specs else {}
        committed_raw = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    out = []
    for stage, topic in topics.items():
        ends = {tp.partition: int(o.offset) for tp, o in ends_raw.items() if tp.topic == topic}
        committed = {
            tp.partition: int(o.offset)
            for tp, o in committed_raw.items()
            if tp.topic == topic and o.offset is not None and o.offset >= 0
        }
        out.append(lag_from_offsets(stage, topic, ends, committed))
    return out
