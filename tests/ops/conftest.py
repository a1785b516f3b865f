"""Fixtures for the ops tests that run whole commands against the real engines."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture
def private_deployment(
    tmp_path: Path, engines: object, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], dict[str, str]]]:
    """``private_deployment("demo")`` -> the environment (also set) of a deployment on its
    own topics, consumer group, collection, Redis prefix and state dir. Afterwards its
    topics and every collection named ``<collection>`` or ``<collection>__*`` are dropped."""
    made: list[dict[str, str]] = []

    def make(prefix: str) -> dict[str, str]:
        suffix = uuid.uuid4().hex[:8]
        env = {
            **{
                f"CROSSFEED_TOPIC_{kind.upper()}": f"{prefix}-{suffix}.posts.{kind}"
                for kind in ("raw", "clean", "vectors", "deadletter")
            },
            "CROSSFEED_APP_ID": f"crossfeed-{prefix}-{suffix}",
            "CROSSFEED_COLLECTION": f"crossfeed_{prefix}_{suffix}",
            "CROSSFEED_REDIS_PREFIX": f"crossfeed-{prefix}-{suffix}",
            "CROSSFEED_STATE_DIR": str(tmp_path / "state"),
            "CROSSFEED_KAFKA_SESSION_TIMEOUT": "6",
            "CROSSFEED_CPU_THREADS": "1",
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        made.append(env)
        return env

    yield make
    from kafka.admin import KafkaAdminClient
    from pymilvus import MilvusClient

    from crossfeed.core.settings import MilvusSettings

    admin = KafkaAdminClient(bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    client = MilvusClient(uri=MilvusSettings().uri)
    try:
        for env in made:
            with contextlib.suppress(Exception):
                admin.delete_topics([v for k, v in env.items() if k.startswith("CROSSFEED_TOPIC")])
            for name in client.list_collections():
                if name.startswith(env["CROSSFEED_COLLECTION"]):
                    client.drop_collection(name)
    finally:
        admin.close()
        client.close()
