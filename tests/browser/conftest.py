"""A private live deployment for browser tests: one worker process (hashing embedder), the
API in a uvicorn thread, on their own topics, consumer group, collection and Redis prefix.

The browser is Debian's ``chromium`` driven through ``/usr/bin/chromedriver`` (installed
from apt when missing and running as root, like the other Debian packages the project
needs); nothing downloads a browser.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
DIM = 32
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM = Path("/usr/bin/chromium")
CLIPART = Path("/usr/share/openclipart/png")

_WORKER = f"""
import logging
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.core.settings import Settings
from crossfeed.streams.worker import run_worker
run_worker(Settings(), embedder=HashingEmbedder(dim={DIM}))
"""


def ensure_chromium() -> None:
    """Install Debian's chromium and chromium-driver when missing (as root, like
    redis-server and openclipart-png); otherwise fail with what to install."""
    if CHROMEDRIVER.exists() and CHROMIUM.exists():
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", "chromium", "chromium-driver"]
        if subprocess.run(cmd, env=env, check=False, timeout=1800).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, check=False, timeout=900)
            subprocess.run(cmd, env=env, check=False, timeout=1800)
    if not CHROMEDRIVER.exists():
        pytest.fail("browser tests need Debian's chromium and chromium-driver (apt-get install)")


@dataclass
class Deployment:
    suffix: str
    tmp: Path
    env: dict[str, str]
    url: str = ""
    worker: subprocess.Popen | None = None
    server: Any = None
    threads: list[threading.Thread] = field(default_factory=list)

    @property
    def topic_raw(self) -> str:
        return self.env["CROSSFEED_TOPIC_RAW"]

    def post(self, pid: str, text: str, image: bytes | None = None, **extra: Any) -> dict:
        body: dict[str, Any] = {
            "id": f"{self.suffix}-{pid}",
            "source": "browser-test",
            "author": "@tester",
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "text": text,
            **extra,
        }
        if image is not None:
            body["media"] = [
                {"kind": "image", "data_base64": base64.b64encode(image).decode("ascii")}
            ]
        return body

    def produce(self, posts: list[dict | bytes]) -> float:
        """Send posts to posts.raw; returns the time.monotonic() they were handed over."""
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=0)
        try:
            for p in posts:
                value = p if isinstance(p, bytes) else json.dumps(p).encode()
                key = None if isinstance(p, bytes) else p["id"].encode()
                producer.send(self.topic_raw, key=key, value=value)
            producer.flush()
            return time.monotonic()
        finally:
            producer.close()

    def worker_log(self) -> str:
        path = self.tmp / "worker.log"
        return path.read_text(errors="replace")[-5000:] if path.exists() else "(no log)"


def pictures(count: int) -> list[bytes]:
    """Clipart PNGs (openclipart-png) when installed, else generated pictures."""
    import io

    from PIL import Image, ImageDraw

    found: list[bytes] = []
    if CLIPART.is_dir():
        for folder in ("animals", "food", "transportation", "plants", "buildings"):
            for path in sorted((CLIPART / folder).rglob("*.png"))[:40:7]:
                if path.is_file() and path.stat().st_size < 400_000:
                    found.append(path.read_bytes())
    while len(found) < count:
        i = len(found)
        img = Image.new("RGB", (160, 120), (40 + 50 * (i % 4), 120, 200 - 30 * (i % 5)))
        ImageDraw.Draw(img).ellipse((30, 20, 130, 100), fill=(250, 220 - 20 * (i % 6), 60))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        found.append(buf.getvalue())
    return found[:count]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def deployment(engines: object, tmp_path: Path) -> Iterator[Deployment]:
    from kafka.admin import KafkaAdminClient, NewTopic

    suffix = uuid.uuid4().hex[:8]
    env = {
        **{
            f"CROSSFEED_TOPIC_{k.upper()}": f"crossfeed-browser-{suffix}.posts.{k}"
            for k in ("raw", "clean", "vectors", "deadletter")
        },
        "KAFKA_BOOTSTRAP": BOOTSTRAP,
        "CROSSFEED_PARTITIONS": "2",
        "CROSSFEED_KAFKA_SESSION_TIMEOUT": "6",
        "CROSSFEED_APP_ID": f"crossfeed-browser-{suffix}",
        "CROSSFEED_COLLECTION": f"crossfeed_browser_{suffix}",
        "CROSSFEED_REDIS_PREFIX": f"crossfeed-browser-{suffix}",
        "CROSSFEED_STATE_DIR": str(tmp_path / "state"),
        "CROSSFEED_BATCH_SIZE": "32",
        "CROSSFEED_BATCH_WAIT": "0.2",
        "CROSSFEED_SSE_HEARTBEAT_S": "5",
    }
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    admin.create_topics(
        [NewTopic(env[k], num_partitions=2, replication_factor=1) for k in env if "TOPIC" in k]
    )
    dep = Deployment(suffix, tmp_path, env)
    saved = dict(os.environ)
    try:
        with (tmp_path / "worker.log").open("wb") as log:
            dep.worker = subprocess.Popen(
                [sys.executable, "-c", _WORKER],
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        os.environ.update(env)
        _start_api(dep)
        yield dep
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if dep.server is not None:
            dep.server.should_exit = True
            for t in dep.threads:
                t.join(timeout=15)
        if dep.worker is not None and dep.worker.poll() is None:
            dep.worker.terminate()
            try:
                dep.worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                dep.worker.kill()
                dep.worker.wait()
        _cleanup(admin, env)


def _start_api(dep: Deployment) -> None:
    import uvicorn

    from crossfeed.api.app import create_app
    from crossfeed.core.settings import Settings
    from crossfeed.encoders.testing import HashingEmbedder

    port = _free_port()
    app = create_app(Settings(), embedder=HashingEmbedder(dim=DIM))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    dep.server = uvicorn.Server(config)
    thread = threading.Thread(target=dep.server.run, name="api", daemon=True)
    thread.start()
    dep.threads.append(thread)
    deadline = time.monotonic() + 60
    while not dep.server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise AssertionError("the API did not start")
        time.sleep(0.1)
    dep.url = f"http://127.0.0.1:{port}"


def _cleanup(admin: Any, env: dict[str, str]) -> None:
    import redis

    from crossfeed.core.settings import MilvusSettings, RedisSettings
    from crossfeed.indexer.milvus import MilvusIndex

    with contextlib.suppress(Exception):
        admin.delete_topics([v for k, v in env.items() if "TOPIC" in k])
    with contextlib.suppress(Exception):
        admin.delete_groups([env["CROSSFEED_APP_ID"]])
    admin.close()
    client = redis.Redis.from_url(RedisSettings().url.get_secret_value())
    keys = list(client.scan_iter(match=f"{env['CROSSFEED_REDIS_PREFIX']}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
    index = MilvusIndex(MilvusSettings(CROSSFEED_COLLECTION=env["CROSSFEED_COLLECTION"]))
    with contextlib.suppress(Exception):
        index.drop()
    index.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    ensure_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1500",
        f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path, prefix='chromium-')}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def make_pictures() -> Any:
    return pictures
