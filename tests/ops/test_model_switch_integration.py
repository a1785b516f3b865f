"""Serving a newly trained tag-space head, end to end on the real engines and towers.

The flow the README gives: posts stream in under the built-in head -> ``crossfeed
train --space tags --from-kafka`` saves a new version (a tag-posterior space, whose
dimension differs from the serving collection's) -> ``crossfeed reindex`` back-fills
it into its own collection -> API and worker are switched with the printed settings
-> the API answers from the new space and the switched worker indexes new posts there.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from crossfeed.core.settings import MilvusSettings, Settings
from crossfeed.ops.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VERSION = "tags-switch-test"


def _count(collection: str) -> int:
    from crossfeed.indexer.milvus import MilvusIndex

    index = MilvusIndex(MilvusSettings(CROSSFEED_COLLECTION=collection))
    try:
        return index.count()
    except Exception:  # not created or not loaded yet
        return -1
    finally:
        index.close()


def _wait_rows(collection: str, rows: int, proc: subprocess.Popen, log: Path) -> int:
    deadline = time.monotonic() + 300
    last = -1
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-4000:]
        last = _count(collection)
        if last >= rows:
            return last
        time.sleep(1)
    raise AssertionError(f"{last} rows in {collection}\n{log.read_text()[-4000:]}")


@pytest.fixture
def names(tmp_path: Path, private_deployment: Callable[[str], dict[str, str]]) -> dict:
    env = private_deployment("switch")  # its __<version> collection is dropped too
    return {"env": env, "collections": [env["CROSSFEED_COLLECTION"]], "tmp": tmp_path}


def _worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "crossfeed.ops.cli", "worker"],
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_train_reindex_and_switch_to_a_tag_space(
    names: dict, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from crossfeed.api.app import create_app
    from crossfeed.corpus.build import build_corpus, ensure_clipart
    from crossfeed.ops.data.produce import produce
    from crossfeed.ops.run.demo import expected_rows

    tmp: Path = names["tmp"]
    env: dict[str, str] = names["env"]
    corpus = build_corpus(
        tmp / "corpus",
        clipart_root=ensure_clipart(allow_install=False),
        limit=80,
        seed=3,
        video_fraction=0.0,
        progress=False,
    )
    media_env = {"CROSSFEED_MEDIA_ROOTS": json.dumps([str(p) for p in corpus.media_roots])}
    monkeypatch.setenv("CROSSFEED_MEDIA_ROOTS", media_env["CROSSFEED_MEDIA_ROOTS"])
    late = next(p for p in reversed(corpus.posts) if expected_rows([p]) > 0)
    early = [p for p in corpus.posts if p is not late]

    # 1. Stream under the built-in head (no version on disk yet).
    log_a = tmp / "worker-a.log"
    worker = _worker(media_env, log_a)
    try:
        settings = Settings()
        produce(early, settings.kafka, progress=False)
        rows_a = _wait_rows(env["CROSSFEED_COLLECTION"], expected_rows(early), worker, log_a)
        assert rows_a == expected_rows(early)
    finally:
        _stop(worker)

    # 2. Train a tag-posterior space from the posts on Kafka.
    assert main(["train", "--from-kafka", "--space", "tags", "--version", VERSION,
                 "--no-progress", "--json"]) == 0  # fmt: skip
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert trained["version"] == VERSION

    # 3. Back-fill it into its own collection; the switch line is printed.
    assert main(["reindex", "--model-version", VERSION, "--idle-s", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    switch = re.search(r"CROSSFEED_MODEL_VERSION=(\S+) CROSSFEED_COLLECTION=(\S+)", out)
    assert switch is not None, out
    assert switch.group(1) == VERSION
    new_collection = switch.group(2)
    names["collections"].append(new_collection)
    assert _count(new_collection) == rows_a  # every row re-embedded, nothing more
    from pymilvus import MilvusClient

    client = MilvusClient(uri=MilvusSettings().uri)
    try:
        fields = client.describe_collection(new_collection)["fields"]
    finally:
        client.close()
    dim = next(int(f["params"]["dim"]) for f in fields if f["name"] == "vector")
    assert dim == trained["tags"] + trained["topics"] != 384  # a space of its own

    # 4. Switch: the API answers from the new space ...
    monkeypatch.setenv("CROSSFEED_MODEL_VERSION", VERSION)
    monkeypatch.setenv("CROSSFEED_COLLECTION", new_collection)
    switched = Settings()
    with TestClient(create_app(switched)) as client:
        # The API searches with bounded staleness: rows written seconds ago may still be
        # settling, so ask until they show (or give up after 20 s).
        deadline = time.monotonic() + 20
        while True:
            r = client.post("/v1/search", json={"text": f"animals {time.monotonic()}", "top_k": 5})
            assert r.status_code == 200, r.text
            body = r.json()
            if len(body["results"]) == 5 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert body["model_version"] == VERSION and len(body["results"]) == 5

    # ... and the switched worker indexes new posts into the new collection.
    log_b = tmp / "worker-b.log"
    worker = _worker({**media_env, "CROSSFEED_MODEL_VERSION": VERSION,
                      "CROSSFEED_COLLECTION": new_collection}, log_b)  # fmt: skip
    try:
        produce([late], switched.kafka, progress=False)
        _wait_rows(new_collection, rows_a + expected_rows([late]), worker, log_b)
    finally:
        _stop(worker)
    assert _count(env["CROSSFEED_COLLECTION"]) == rows_a  # the old collection is left alone
