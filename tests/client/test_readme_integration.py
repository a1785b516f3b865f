"""The README's Python client example, run as written against a real deployment.

A worker (hashing embedder, so it is quick) reads private topics into a private Milvus
collection; the API runs on a loopback port over that collection and Redis; the README's
``python`` blocks under "Python client" are executed in order in one namespace, with
``KAFKA_*``/``CROSSFEED_*`` pointing at this deployment (``CROSSFEED_API_URL`` at the API).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from crossfeed.core.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

README = Path(__file__).resolve().parents[2] / "README.md"
DIM = 32
_WORKER = """
import logging
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.core.settings import Settings
from crossfeed.streams.worker import run_worker
run_worker(Settings(), embedder=HashingEmbedder(dim={dim}))
"""


def readme_blocks(section: str = "Python client") -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end > 0 else len(text)]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


@pytest.fixture
def deployment(
    engines: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    from kafka.admin import KafkaAdminClient, NewTopic

    suffix = uuid.uuid4().hex[:8]
    env = {
        **{
            f"CROSSFEED_TOPIC_{kind.upper()}": f"readme-{suffix}.posts.{kind}"
            for kind in ("raw", "clean", "vectors", "deadletter")
        },
        "CROSSFEED_APP_ID": f"crossfeed-readme-{suffix}",
        "CROSSFEED_COLLECTION": f"crossfeed_readme_{suffix}",
        "CROSSFEED_REDIS_PREFIX": f"crossfeed-readme-{suffix}",
        "CROSSFEED_STATE_DIR": str(tmp_path / "state"),
        "CROSSFEED_KAFKA_SESSION_TIMEOUT": "6",
        "CROSSFEED_PARTITIONS": "2",
        "CROSSFEED_BATCH_WAIT": "0.3",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    bootstrap = Settings().kafka.bootstrap
    topics = [v for k, v in env.items() if k.startswith("CROSSFEED_TOPIC")]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(t, num_partitions=2, replication_factor=1) for t in topics])
    try:
        yield env
    finally:
        with contextlib.suppress(Exception):  # best effort: the names are unique anyway
            admin.delete_topics(topics)
        with contextlib.suppress(Exception):
            admin.delete_groups([env["CROSSFEED_APP_ID"]])
        admin.close()
        import redis
        from pymilvus import MilvusClient

        settings = Settings()
        client = redis.Redis.from_url(settings.redis.url.get_secret_value())
        keys = list(client.scan_iter(f"{env['CROSSFEED_REDIS_PREFIX']}:*"))
        if keys:
            client.delete(*keys)
        client.close()
        milvus = MilvusClient(uri=settings.milvus.uri)
        for name in milvus.list_collections():
            if name.startswith(env["CROSSFEED_COLLECTION"]):
                milvus.drop_collection(name)
        milvus.close()


def test_readme_example_runs(
    deployment: dict[str, str],
    serve: Callable[..., str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from crossfeed.api.app import create_app
    from crossfeed.encoders.testing import HashingEmbedder
    from crossfeed.indexer.milvus import MilvusIndex

    blocks = readme_blocks()
    assert len(blocks) == 4, "the README's client example changed shape"
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER.format(dim=DIM)],
        env={**os.environ},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    settings = Settings()
    index = MilvusIndex(settings.milvus, consistency_level="Strong")
    try:
        url = serve(create_app(settings, embedder=HashingEmbedder(dim=DIM), index=index))
        monkeypatch.setenv("CROSSFEED_API_URL", url)
        namespace: dict[str, Any] = {"__name__": "readme"}
        out = io.StringIO()
        with redirect_stdout(out):
            for block in blocks:
                exec(compile(block, "README.md", "exec"), namespace)
    except BaseException:
        print((tmp_path / "worker.log").read_text()[-4000:])
        raise
    finally:
        worker.kill()
        worker.wait()
        index.close()

    printed = out.getvalue()
    page, by_image, ids = namespace["page"], namespace["by_image"], namespace["ids"]
    assert page.results[0].id.startswith("notebook-red-")  # text search
    assert page.results[0].source == "notebook" and page.results[0].author == "@me"
    assert by_image.results[0].id.startswith("notebook-red-")  # image search
    assert by_image.results[0].modality == "image"
    assert sorted(ids) == sorted(p.id for p in namespace["posts"])  # every post, once
    assert "12 posts in pages of 5" in printed
    assert json.loads(page.model_dump_json())["next_cursor"]  # there were more pages
    assert "new: notebook-purple-0" in printed  # the standing query saw the new post
