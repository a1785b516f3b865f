"""``crossfeed demo --no-serve`` end to end on a small corpus, on private names.

The README's main command, run the way a user runs it (CLI ``main(argv)``), but on
its own topics, consumer group, collection, Redis prefix and state directory, so
it neither reads nor disturbs anything else on the engines.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from crossfeed.ops.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def private_env(tmp_path: Path, engines: object, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    suffix = uuid.uuid4().hex[:8]
    names = {
        "CROSSFEED_TOPIC_RAW": f"demo-{suffix}.posts.raw",
        "CROSSFEED_TOPIC_CLEAN": f"demo-{suffix}.posts.clean",
        "CROSSFEED_TOPIC_VECTORS": f"demo-{suffix}.posts.vectors",
        "CROSSFEED_TOPIC_DEADLETTER": f"demo-{suffix}.posts.deadletter",
        "CROSSFEED_APP_ID": f"crossfeed-demo-{suffix}",
        "CROSSFEED_COLLECTION": f"crossfeed_demo_{suffix}",
        "CROSSFEED_REDIS_PREFIX": f"crossfeed-demo-{suffix}",
        "CROSSFEED_STATE_DIR": str(tmp_path / "state"),
        "CROSSFEED_KAFKA_SESSION_TIMEOUT": "6",
        "CROSSFEED_API_PORT": str(18000 + int(suffix[:4], 16) % 2000),
        "CROSSFEED_CPU_THREADS": "1",
        "COLUMNS": "200",  # rich wraps at the terminal width
    }
    for key, value in names.items():
        monkeypatch.setenv(key, value)
    yield suffix
    from kafka.admin import KafkaAdminClient

    from crossfeed.ops.settings import MilvusSettings

    admin = KafkaAdminClient(bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    with contextlib.suppress(Exception):
        admin.delete_topics([v for k, v in names.items() if k.startswith("CROSSFEED_TOPIC")])
    admin.close()
    from pymilvus import MilvusClient

    client = MilvusClient(uri=MilvusSettings().uri)
    try:  # the demo serves <collection>__<head version>
        for name in client.list_collections():
            if name.startswith(names["CROSSFEED_COLLECTION"]):
                client.drop_collection(name)
    finally:
        client.close()


def test_demo_indexes_its_corpus_and_answers(
    private_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--limit", "60", "--no-serve"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(next(line for line in out.splitlines() if line.startswith('{"posts"')))
    assert summary["rows"] >= summary["expected_rows"] > 60  # + video moments
    assert "ready" in out
    # Every example query printed hits (a score line under it).
    assert len(re.findall(r"^\s+\d\.\d{3} (image|video)", out, flags=re.M)) >= 5
    assert "tags the stream suggested" in out
    assert re.search(r"serving \S+ from collection crossfeed_demo_\w+__\w+", out)
