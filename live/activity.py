"""Pipeline activity across processes: posts per second per stage, dead letters by reason.

Each worker's :class:`ActivityPublisher` turns its own Prometheus counters
(``crossfeed_posts_in/out`` per stage, ``crossfeed_deadletter_reasons`` per stage and
reason label) into deltas once a second and adds them to Redis: per-second buckets
(kept three minutes) for rates, one hash of totals for dead letters. The API sums the
buckets of the last minute over every worker (:func:`read_activity`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from crossfeed.live.keys import LiveKeys

log = logging.getLogger(__name__)

BUCKET_TTL_S = 180
WINDOW_S = 60
MAX_LABEL_CHARS = 60
STAGES = ("normalize", "embed", "index")

_QUOTED = re.compile(r"('[^']*'|\"[^\"]*\")")
_PARENS = re.compile(r"\([^)]*\)")
_NUMBERS = re.compile(r"\d+")
_SPACES = re.compile(r"\s+")


def reason_label(reason: str) -> str:
    """A bounded label for a dead letter's free-text reason: the first one or two clauses
    with quoted values, parenthesised details and numbers taken out, so reasons of one
    kind share a label ("media 3 (image, a.png): too large: 9 bytes" -> "media: too large").
    """
    text = _NUMBERS.sub("", _PARENS.sub("", _QUOTED.sub("", reason)))
    parts = [_SPACES.sub(" ", p).strip(" .,;-") for p in text.split(":")]
    parts = [p for p in parts if p][:2]
    label = ": ".join(parts) or "unknown"
    return label[:MAX_LABEL_CHARS]


@dataclass
class ActivityPublisher:
    """Publishes counter deltas of one worker's registry to Redis (blocking client)."""

    registry: CollectorRegistry
    client: redis.Redis
    prefix: str
    clock: Callable[[], float] = time.time
    _last: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _counters(self) -> dict[str, float]:
        """``{"rate|<stage>:in": n, "rate|<stage>:out": n, "dead|<stage>|<label>": n}``."""
        out: dict[str, float] = {}
        for metric in self.registry.collect():
            for sample in metric.samples:
                if not sample.name.endswith("_total"):
                    continue
                labels = sample.labels
                if sample.name == "crossfeed_posts_in_total":
                    out[f"rate|{labels['stage']}:in"] = sample.value
                elif sample.name == "crossfeed_posts_out_total":
                    out[f"rate|{labels['stage']}:out"] = sample.value
                elif sample.name == "crossfeed_deadletter_reasons_total":
                    out[f"dead|{labels['stage']}|{labels['reason']}"] = sample.value
        return out

    def flush(self) -> int:
        """Write the deltas since the last flush; returns how many counters moved."""
        with self._lock:
            now = self._counters()
            deltas = {k: v - self._last.get(k, 0.0) for k, v in now.items()}
            deltas = {k: d for k, d in deltas.items() if d > 0}
            if not deltas:
                return 0
            keys = LiveKeys(self.prefix)
            bucket = keys.rate(int(self.clock()))
            pipe = self.client.pipeline(transaction=False)
            for name, delta in deltas.items():
                kind, _, field_name = name.partition("|")
                if kind == "rate":
                    pipe.hincrby(bucket, field_name, round(delta))
                else:
                    pipe.hincrby(keys.deadletters, field_name, round(delta))
            pipe.expire(bucket, BUCKET_TTL_S)
            try:
                pipe.execute()
            except (redis.RedisError, OSError) as exc:
                log.debug("activity flush failed, retried next time: %s", exc)
                return 0
            self._last = now
            return len(deltas)

    def close(self) -> None:
        self.client.close()


@dataclass(frozen=True)
class Activity:
    window_s: int
    rates: dict[str, dict[str, float]]  # stage -> {"in_per_s", "out_per_s"}
    series: dict[str, list[int]]  # stage -> posts in per second, oldest first (window_s)
    deadletters: list[dict[str, Any]]  # [{"stage", "reason", "count"}], most first


async def read_activity(
    client: aioredis.Redis, prefix: str, *, window_s: int = WINDOW_S, now: float | None = None
) -> Activity:
    """Rates over the last ``window_s`` complete seconds, summed over every worker."""
    keys = LiveKeys(prefix)
    end = int(now if now is not None else time.time())  # the current second is incomplete
    seconds = list(range(end - window_s, end))
    series: dict[str, list[int]] = {s: [0] * window_s for s in STAGES}
    totals: dict[str, dict[str, int]] = {s: {"in": 0, "out": 0} for s in STAGES}
    try:
        pipe = client.pipeline(transaction=False)
        for second in seconds:
            pipe.hgetall(keys.rate(second))
        buckets = await pipe.execute()
        dead_raw = await client.hgetall(keys.deadletters)
    except (redis.RedisError, OSError) as exc:
        log.debug("activity read failed: %s", exc)
        buckets, dead_raw = [{} for _ in seconds], {}
    for i, bucket in enumerate(buckets):
        for raw_field, raw_value in bucket.items():
            name = raw_field.decode() if isinstance(raw_field, bytes) else raw_field
            stage, _, direction = name.partition(":")
            if stage not in totals or direction not in ("in", "out"):
                continue
            value = int(raw_value)
            totals[stage][direction] += value
            if direction == "in":
                series[stage][i] += value
    rates = {
        s: {"in_per_s": round(t["in"] / window_s, 3), "out_per_s": round(t["out"] / window_s, 3)}
        for s, t in totals.items()
    }
    dead: list[dict[str, Any]] = []
    for raw_field, raw_value in dead_raw.items():
        name = raw_field.decode() if isinstance(raw_field, bytes) else raw_field
        stage, _, label = name.partition("|")
        dead.append({"stage": stage, "reason": label, "count": int(raw_value)})
    dead.sort(key=lambda d: (-d["count"], d["stage"], d["reason"]))
    return Activity(window_s, rates, series, dead)
