"""`crossfeed keys` against the real Redis, and the API checking those keys."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from crossfeed.api.app import create_app
from crossfeed.api.cache import MemorySearchCache
from crossfeed.core.settings import ApiSettings, RedisSettings, Settings
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.indexer.memory import InMemoryIndex
from crossfeed.ops.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture
def prefix(
    engines: object, unique_name: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    name = unique_name("keys")
    monkeypatch.setenv("CROSSFEED_REDIS_PREFIX", name)
    yield name
    client = redis.Redis.from_url(RedisSettings().url.get_secret_value())
    keys = list(client.scan_iter(f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_created_keys_work_are_stored_as_hashes_and_can_be_revoked(
    prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "--scope", "search", "--name", "dashboard"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]  # alone on the last line
    assert key.startswith("cfk_")

    raw = redis.Redis.from_url(RedisSettings().url.get_secret_value())
    stored = raw.hgetall(f"{prefix}:apikeys")
    raw.close()
    assert len(stored) == 1 and key.encode() not in b"".join(stored.values())

    settings = Settings()
    settings.api = ApiSettings(CROSSFEED_API_AUTH="on")
    app = create_app(
        settings,
        embedder=HashingEmbedder(dim=16),
        index=InMemoryIndex(dim=16),
        cache=MemorySearchCache(),
    )
    with TestClient(app) as c:
        body = {"text": "cats"}
        assert c.post("/v1/search", json=body).status_code == 401
        ok = c.post("/v1/search", json=body, headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200, ok.text

        assert main(["keys", "list", "--json"]) == 0
        [listed] = json.loads(capsys.readouterr().out)["keys"]
        assert listed["name"] == "dashboard" and listed["scopes"] == ["search"]
        assert main(["keys", "revoke", listed["id"]]) == 0
        gone = c.post("/v1/search", json=body, headers={"Authorization": f"Bearer {key}"})
        assert gone.status_code == 401
    assert main(["keys", "revoke", listed["id"]]) == 1
