"""Fault tests: a private set of engines (broker, Milvus, Redis on their own ports and state
directory) that the tests may kill and restart without touching the shared dev engines, and
stream workers (hashing embedder: the faults under test are in delivery, not in models).

Run them with ``pytest -m fault`` (several minutes; not part of ``make test``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from crossfeed.core.settings import Settings, StateSettings

DIM = 32
PARTITIONS = 4

_WORKER = f"""
import logging
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
from crossfeed.core.settings import Settings
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.streams.worker import run_worker
run_worker(Settings(), embedder=HashingEmbedder(dim={DIM}))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _free_milvus_port() -> int:
    from crossfeed.ops.engines import launch, procs

    for port in range(24530, 31900, 100):
        if not procs.busy_ports(launch.milvus_listen_ports(launch.milvus_ports(port))):
            return port
    raise RuntimeError("no free port range for a private Milvus")


@pytest.fixture(scope="session")
def private_engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Broker, Milvus and Redis of our own, started for this session and stopped after."""
    from crossfeed.ops.engines.control import down, up

    s = Settings()
    s.state = StateSettings(state_dir=tmp_path_factory.mktemp("fault-engines"))
    s.kafka.bootstrap = f"127.0.0.1:{_free_port()}"
    s.milvus.uri = f"http://127.0.0.1:{_free_milvus_port()}"
    s.redis.url = SecretStr(f"redis://127.0.0.1:{_free_port()}/0")
    up(s)
    try:
        yield s
    finally:
        down(s)


@dataclass
class Deployment:
    """Private names (topics, group, collection, Redis prefix) on the private engines."""

    engines: Settings
    tmp: Path
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    workers: list[subprocess.Popen] = field(default_factory=list)

    @property
    def collection(self) -> str:
        return f"faults_{self.suffix}"

    @property
    def env(self) -> dict[str, str]:
        s = self.engines
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP": s.kafka.bootstrap,
            "MILVUS_URI": s.milvus.uri,
            "REDIS_URL": s.redis.url.get_secret_value(),
            "CROSSFEED_TOPIC_RAW": f"faults-{self.suffix}.raw",
            "CROSSFEED_TOPIC_CLEAN": f"faults-{self.suffix}.clean",
            "CROSSFEED_TOPIC_VECTORS": f"faults-{self.suffix}.vectors",
            "CROSSFEED_TOPIC_DEADLETTER": f"faults-{self.suffix}.deadletter",
            "CROSSFEED_PARTITIONS": str(PARTITIONS),
            "CROSSFEED_KAFKA_SESSION_TIMEOUT": "6",
            "CROSSFEED_APP_ID": f"faults-{self.suffix}",
            "CROSSFEED_COLLECTION": self.collection,
            "CROSSFEED_REDIS_PREFIX": f"faults-{self.suffix}",
            "CROSSFEED_STATE_DIR": str(self.tmp / "state"),
            "CROSSFEED_BATCH_SIZE": "64",
            "CROSSFEED_BATCH_WAIT": "0.2",
        }

    def settings(self) -> Settings:
        saved = dict(os.environ)
        os.environ.update(self.env)
        try:
            return Settings()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def start_worker(self) -> subprocess.Popen:
        log = (self.tmp / f"worker-{len(self.workers)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        self.workers.append(proc)
        return proc

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(
            f"--- {p.name}\n" + p.read_text(errors="replace")[-tail:]
            for p in sorted(self.tmp.glob("worker-*.log"))
        )

    def produce(self, count: int, *, start: int = 0, per_s: float = 0.0) -> list[str]:
        """``count`` text posts (ids ``p<n>``), optionally paced; returns their ids."""
        from crossfeed.core.schema import Post
        from crossfeed.ops.data.produce import produce

        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        ids = [f"p{n}" for n in range(start, start + count)]

        def posts() -> Iterator[Post]:
            began = time.monotonic()
            for i, post_id in enumerate(ids):
                if per_s > 0:
                    delay = began + i / per_s - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                yield Post(
                    id=post_id,
                    source="faults",
                    author=f"u{i % 97}",
                    created_at=t0 + timedelta(seconds=i),
                    text=f"fault test post number {post_id} about topic {i % 13}",
                )

        produce(posts(), self.settings().kafka, progress=False)
        return ids

    def rows(self) -> list[str]:
        """Every row id in the collection (strong consistency: the latest upserts count)."""
        from pymilvus import MilvusClient

        client = MilvusClient(uri=self.engines.milvus.uri, timeout=30)
        try:
            if not client.has_collection(self.collection):
                return []
            found = client.query(
                self.collection,
                filter='row_id != ""',
                output_fields=["row_id"],
                limit=16_384,  # Milvus' cap on one query; the fault runs stay below it
                consistency_level="Strong",
            )
            return [r["row_id"] for r in found]
        finally:
            client.close()

    def wait_growth(self, than: int, by: int, timeout_s: float = 60.0) -> int:
        """Rows once at least ``than + by`` are in (so a kill lands mid-indexing)."""
        deadline = time.monotonic() + timeout_s
        n = than
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                n = len(self.rows())
                if n >= than + by:
                    return n
            time.sleep(0.5)
        return n

    def wait_rows(self, expected: set[str], timeout_s: float) -> list[str]:
        """Row ids once ``expected`` are all in (or the deadline passed)."""
        deadline = time.monotonic() + timeout_s
        rows: list[str] = []
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # the engine may be restarting
                rows = self.rows()
                if expected <= set(rows):
                    time.sleep(2.0)  # late replays would show up as extra rows now
                    return self.rows()
            time.sleep(2.0)
        return rows

    def kill_engine(self, name: str) -> None:
        """SIGKILL one of the private engines (no chance to flush or shut down)."""
        from crossfeed.ops.engines.procs import PidFiles, pid_alive

        record = PidFiles(self.engines.state.state_dir).read(name)
        assert record is not None, f"{name} is not running"
        os.kill(record.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not pid_alive(record.pid):  # reaps it: `up` started it from this process
                return
            time.sleep(0.2)
        raise AssertionError(f"{name} (pid {record.pid}) survived SIGKILL")

    def restart_engine(self, name: str) -> float:
        """Start ``name`` again; returns seconds until it answered."""
        from crossfeed.ops.engines.control import up

        started = time.monotonic()
        up(self.engines, [name])
        return time.monotonic() - started

    @staticmethod
    def report(name: str, **figures: object) -> None:
        """Print a test's figure (shown with ``pytest -s``, kept in the log)."""
        print(f"\n[fault] {name}: " + json.dumps(figures, sort_keys=True))

    def cleanup(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        from pymilvus import MilvusClient

        with contextlib.suppress(Exception):
            client = MilvusClient(uri=self.engines.milvus.uri, timeout=10)
            client.drop_collection(self.collection)
            client.close()


@pytest.fixture
def deployment(private_engines: Settings, tmp_path: Path) -> Iterator[Deployment]:
    from crossfeed.streams.topics import ensure_topics

    d = Deployment(private_engines, tmp_path)
    ensure_topics(d.settings().kafka)
    try:
        yield d
    finally:
        d.cleanup()
