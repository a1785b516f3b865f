"""A private, throw-away pipeline on the running engines, for the ingest and query benches.

Everything a bench run creates carries one random suffix: Kafka topics
(``crossfeed_bench_<hex>.raw`` ...), the faust app id / consumer group, the Milvus
collection and the Redis key prefix. So a bench never reads or writes the data of
the dev pipeline or of another run, and :func:`cleanup` can remove exactly what the
run made: the collection, the topics (faust's internal ones included) and the keys.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossfeed.core.settings import Settings
from crossfeed.ops.exceptions import BenchError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchNames:
    """The names of one bench run's topics, consumer group, collection and key prefix."""

    suffix: str

    @classmethod
    def new(cls) -> BenchNames:
        return cls(uuid.uuid4().hex[:10])

    def __post_init__(self) -> None:
        if not (self.suffix.isascii() and self.suffix.isalnum() and len(self.suffix) <= 32):
            raise ValueError(
                f"bench name suffix must be 1-32 ASCII letters/digits: {self.suffix!r}"
            )

    @property
    def base(self) -> str:
        return f"crossfeed_bench_{self.suffix}"

    @property
    def topics(self) -> dict[str, str]:
        return {k: f"{self.base}.{k}" for k in ("raw", "clean", "vectors", "deadletter")}

    @property
    def app_id(self) -> str:
        return f"crossfeed-bench-{self.suffix}"

    @property
    def collection(self) -> str:
        return self.base

    @property
    def redis_prefix(self) -> str:
        return f"crossfeed-bench-{self.suffix}"


def bench_settings(base: Settings, names: BenchNames, media_roots: Sequence[Path] = ()) -> Settings:
    """``base`` (engine URLs, models) with the run's own names and the corpus media roots."""
    s = copy.copy(base)
    t = names.topics
    s.kafka = base.kafka.model_copy(
        update={
            "topic_raw": t["raw"],
            "topic_clean": t["clean"],
            "topic_vectors": t["vectors"],
            "topic_deadletter": t["deadletter"],
        }
    )
    s.stream = base.stream.model_copy(
        update={"app_id": names.app_id, "media_roots": [Path(p) for p in media_roots]}
    )
    s.milvus = base.milvus.model_copy(update={"collection": names.collection})
    s.redis = base.redis.model_copy(update={"key_prefix": names.redis_prefix})
    return s


def pin_model_version(settings: Settings) -> Settings:
    """``settings`` with a model version of "latest" resolved to the concrete version now.

    The worker process and the API load their heads at different moments; if a new head
    version were fitted in between, "latest" would name two versions and the API would
    search vectors of one version with queries of another.
    """
    if settings.encoder.model_version != "latest":
        return settings
    from crossfeed.encoders.heads import FALLBACK_VERSION
    from crossfeed.encoders.versions import list_versions

    versions = list_versions(settings.models_dir)
    version = versions[0].version if versions else FALLBACK_VERSION
    pinned = copy.copy(settings)
    pinned.encoder = settings.encoder.model_copy(update={"model_version": version})
    return pinned


def worker_env(settings: Settings) -> dict[str, str]:
    """Environment for a ``crossfeed worker`` process that runs exactly ``settings``."""
    k, st = settings.kafka, settings.stream
    env = {
        "KAFKA_BOOTSTRAP": k.bootstrap,
        "CROSSFEED_TOPIC_RAW": k.topic_raw,
        "CROSSFEED_TOPIC_CLEAN": k.topic_clean,
        "CROSSFEED_TOPIC_VECTORS": k.topic_vectors,
        "CROSSFEED_TOPIC_DEADLETTER": k.topic_deadletter,
        "CROSSFEED_PARTITIONS": str(k.partitions),
        "CROSSFEED_KAFKA_SESSION_TIMEOUT": str(k.session_timeout_s),
        "CROSSFEED_KAFKA_FETCH_MAX_WAIT_MS": str(k.fetch_max_wait_ms),
        "CROSSFEED_APP_ID": st.app_id,
        "CROSSFEED_MEDIA_ROOTS": json.dumps([str(p) for p in st.media_roots]),
        "CROSSFEED_BATCH_SIZE": str(st.batch_size),
        "CROSSFEED_BATCH_WAIT": str(st.batch_wait_s),
        "MILVUS_URI": settings.milvus.uri,
        "CROSSFEED_COLLECTION": settings.milvus.collection,
        "REDIS_URL": settings.redis.url.get_secret_value(),
        "CROSSFEED_REDIS_PREFIX": settings.redis.key_prefix,
        "CROSSFEED_STATE_DIR": str(settings.state.state_dir),
        "CROSSFEED_MODELS_DIR": str(settings.models_dir),
        "CROSSFEED_MODEL_VERSION": settings.encoder.model_version,
        "CROSSFEED_DEVICE": settings.encoder.device,
        "CROSSFEED_WORKER_METRICS_PORT": str(st.metrics_port),
        "CROSSFEED_TRENDS": "1" if settings.trends.enabled else "0",
        "CROSSFEED_TRENDS_WINDOW_S": str(settings.trends.window_s),
    }
    return env


class RowProbe:
    """Reads row counts straight from Milvus while the worker writes them.

    Reads use consistency "Eventually": they return what the query nodes hold at that
    moment without waiting for a timestamp, i.e. what a search would find, and they
    are cheap enough to poll several times a second.
    """

    def __init__(self, settings: Settings, timeout_s: float = 10.0) -> None:
        from crossfeed.indexer.client import milvus_client

        self.collection = settings.milvus.collection
        self._timeout = timeout_s
        self._loaded = False
        self._client = milvus_client(settings.milvus, timeout_s=timeout_s)

    def exists(self) -> bool:
        return bool(self._client.has_collection(self.collection, timeout=self._timeout))

    def loaded(self) -> bool:
        """Whether the collection exists and is loaded, so queries on it can succeed.

        Checked before querying because pymilvus logs every failed query with a
        traceback, and the worker creates and loads the collection only with its first
        batch. Once loaded, the answer is remembered.
        """
        from pymilvus import MilvusException
        from pymilvus.client.types import LoadState

        if not self._loaded:
            try:
                if self.exists():
                    state = self._client.get_load_state(self.collection, timeout=self._timeout)
                    self._loaded = state.get("state") == LoadState.Loaded
            except MilvusException as exc:
                log.debug("load state of %s: %s", self.collection, exc)
        return self._loaded

    def _query(self, flt: str, fields: list[str], consistency: str, **kw: Any) -> list[dict]:
        from pymilvus import MilvusException

        if not self.loaded():
            return []
        try:
            return list(
                self._client.query(
                    self.collection,
                    filter=flt,
                    output_fields=fields,
                    timeout=self._timeout,
                    consistency_level=consistency,
                    **kw,
                )
            )
        except MilvusException as exc:
            log.debug("query on %s failed: %s", self.collection, exc)
            self._loaded = False  # released or dropped meanwhile: check again next time
            return []

    def count(self, *, strong: bool = False) -> int:
        rows = self._query("", ["count(*)"], "Strong" if strong else "Eventually")
        return int(rows[0]["count(*)"]) if rows else 0

    def rows_by_post(self, post_ids: Iterable[str]) -> dict[str, int]:
        ids = list(dict.fromkeys(post_ids))
        if not ids:
            return {}
        flt = f"post_id in {json.dumps(ids)}"
        found: dict[str, int] = {}
        for row in self._query(flt, ["post_id"], "Eventually", limit=16_384):
            found[row["post_id"]] = found.get(row["post_id"], 0) + 1
        return found

    def row_ids(self, post_ids: Iterable[str], *, strong: bool = True) -> list[str]:
        """The ``row_id`` of every row of ``post_ids`` (a row twice is listed twice)."""
        ids = list(dict.fromkeys(post_ids))
        out: list[str] = []
        for i in range(0, len(ids), 1000):
            flt = f"post_id in {json.dumps(ids[i : i + 1000])}"
            rows = self._query(flt, ["row_id"], "Strong" if strong else "Eventually", limit=16_384)
            out += [r["row_id"] for r in rows]
        return out

    def post_ids(self, limit: int) -> list[str]:
        rows = self._query('modality == "text"', ["post_id"], "Eventually", limit=limit)
        return [r["post_id"] for r in rows]

    def drop(self) -> bool:
        if self.exists():
            self._client.drop_collection(self.collection, timeout=self._timeout)
            return True
        return False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()


@dataclass
class LivePipeline:
    """One running worker process on the run's private topics and collection."""

    settings: Settings
    names: BenchNames
    probe: RowProbe
    log_path: Path
    proc: subprocess.Popen | None = None
    started_at: float = field(default_factory=time.monotonic)

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(
                f"the bench worker exited with status {self.proc.returncode}; "
                f"log tail:\n{log_tail(self.log_path)}"
            )


def log_tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def live_pipeline(
    settings: Settings, names: BenchNames, log_path: Path, *, keep: bool = False
) -> Iterator[LivePipeline]:
    """Create the topics, start one ``crossfeed worker`` process, yield; then stop it and
    remove the run's topics, collection and Redis keys (unless ``keep``)."""
    from crossfeed.ops.run.processes import stop_processes
    from crossfeed.streams.topics import ensure_topics

    probe = RowProbe(settings)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    live = LivePipeline(settings, names, probe, log_path)
    try:
        ensure_topics(settings.kafka)
        live.proc = spawn_worker(settings, log_path)
        live.started_at = time.monotonic()
        yield live
    finally:
        if live.proc is not None:
            stop_processes([live.proc], timeout=30.0)
        if keep:
            log.info("keeping collection %s and topics %s", names.collection, names.base)
        else:
            cleanup(settings, names, probe)
        probe.close()


def spawn_worker(
    settings: Settings, log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """Start one ``crossfeed worker`` process running ``settings`` (plus ``env``), its
    output in ``log_path``; it ends by itself if this process dies."""
    from crossfeed.ops.run.processes import PARENT_PID_ENV, WORKER_ARGV

    log_path.parent.mkdir(parents=True, exist_ok=True)
    child_env = {**os.environ, **worker_env(settings), **(env or {})}
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            list(WORKER_ARGV),
            env={**child_env, PARENT_PID_ENV: str(os.getpid())},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def cleanup(settings: Settings, names: BenchNames, probe: RowProbe | None = None) -> dict[str, Any]:
    """Remove the run's collection, topics, Redis keys and faust data; report what went.

    Each part is attempted even if another fails, and failures are logged, not raised:
    cleanup runs in ``finally`` blocks, where raising would hide the real error.
    """
    done: dict[str, Any] = {}
    own_probe = probe is None
    try:
        probe = probe or RowProbe(settings)
        done["collection_dropped"] = probe.drop()
    except Exception as exc:
        log.warning("could not drop collection %s: %s", names.collection, exc)
    finally:
        if own_probe and probe is not None:
            probe.close()
    try:
        done["topics_deleted"] = _delete_topics(settings, names)
    except Exception as exc:
        log.warning("could not delete topics %s.*: %s", names.base, exc)
    try:
        done["redis_keys_deleted"] = delete_keys(settings, names.redis_prefix)
    except Exception as exc:
        log.warning("could not delete Redis keys %s:*: %s", names.redis_prefix, exc)
    datadir = settings.state.state_dir / "faust" / names.app_id
    if datadir.is_dir() and datadir.resolve().is_relative_to(settings.state.state_dir.resolve()):
        shutil.rmtree(datadir, ignore_errors=True)
    return done


def _delete_topics(settings: Settings, names: BenchNames) -> list[str]:
    from kafka import KafkaAdminClient

    from crossfeed.core.kafka import KafkaConnection

    admin = KafkaAdminClient(
        client_id="crossfeed-bench",
        request_timeout_ms=15_000,
        **KafkaConnection(settings.kafka).kafka_python(),
    )
    try:
        existing = set(admin.list_topics())
        ours = sorted(
            t
            for t in existing
            if t in names.topics.values() or t.startswith((names.base + ".", names.app_id + "-"))
        )
        if ours:
            admin.delete_topics(ours, timeout_ms=15_000)
        return ours
    finally:
        admin.close()


def delete_keys(settings: Settings, prefix: str) -> int:
    import redis

    if not prefix.startswith("crossfeed-bench-"):
        raise BenchError(f"refusing to delete keys outside a bench prefix: {prefix!r}")
    client = redis.Redis.from_url(
        settings.redis.url.get_secret_value(), socket_timeout=5, socket_connect_timeout=5
    )
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}:*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(client.delete(*batch))
    finally:
        client.close()
    return deleted
