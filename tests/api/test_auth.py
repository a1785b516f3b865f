"""API keys, scopes and rate limits over HTTP (in-memory key store and limits)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from crossfeed.api.app import create_app
from crossfeed.api.auth import RateLimits, auth_enabled, required_scope
from crossfeed.api.cache import MemorySearchCache
from crossfeed.api.keys import KeyStoreUnavailableError, MemoryKeyStore, parse_key
from crossfeed.api.metrics import ApiMetrics
from crossfeed.core.settings import ApiSettings, Settings
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.indexer.memory import InMemoryIndex


@pytest.fixture
def keys() -> MemoryKeyStore:
    return MemoryKeyStore()


def _key(store: MemoryKeyStore, *scopes: str) -> str:
    return asyncio.run(store.create(scopes, name="test"))[1]


def _client(
    keys: MemoryKeyStore, listening_port: int, limit: str = "100/minute", **api: object
) -> TestClient:
    s = Settings()
    s.kafka.bootstrap = f"127.0.0.1:{listening_port}"
    s.api = ApiSettings(CROSSFEED_API_AUTH="on", **api)  # type: ignore[arg-type]
    app = create_app(
        s,
        embedder=HashingEmbedder(dim=16),
        index=InMemoryIndex(dim=16),
        cache=MemorySearchCache(),
        metrics=ApiMetrics(),
        keys=keys,
        rate_limits=RateLimits.in_memory(limit),
    )
    return TestClient(app, client=("203.0.113.9", 50000))


@pytest.fixture
def client(keys: MemoryKeyStore, listening_port: int) -> Iterator[TestClient]:
    with _client(keys, listening_port) as c:
        yield c


def _search(c: TestClient, key: str | None = None, header: str = "bearer") -> int:
    headers = {}
    if key and header == "bearer":
        headers["Authorization"] = f"Bearer {key}"
    elif key:
        headers["X-API-Key"] = key
    return c.post("/v1/search", json={"text": "cats"}, headers=headers).status_code


def test_auth_is_on_by_default_off_loopback() -> None:
    assert not auth_enabled(ApiSettings())  # 127.0.0.1: make demo needs no key
    assert auth_enabled(ApiSettings(CROSSFEED_API_HOST="0.0.0.0"))
    assert not auth_enabled(ApiSettings(CROSSFEED_API_HOST="::1"))
    assert auth_enabled(ApiSettings(CROSSFEED_API_HOST="127.0.0.1", CROSSFEED_API_AUTH="on"))
    assert not auth_enabled(ApiSettings(CROSSFEED_API_HOST="10.0.0.5", CROSSFEED_API_AUTH="off"))


def test_no_key_is_401_a_bad_key_is_401_a_good_one_200(
    client: TestClient, keys: MemoryKeyStore
) -> None:
    r = client.post("/v1/search", json={"text": "cats"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["error"]["type"] == "UnauthorizedError"
    key = _key(keys, "search")
    forged = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")
    assert _search(client, forged) == 401
    assert _search(client, "not-a-key") == 401
    assert _search(client, key) == 200
    assert _search(client, key, header="x-api-key") == 200


def test_a_missing_scope_is_403(client: TestClient, keys: MemoryKeyStore) -> None:
    write_only = _key(keys, "write")
    assert _search(client, write_only) == 403
    admin = _key(keys, "admin")
    assert _search(client, admin) == 200  # admin includes search


def test_a_revoked_key_stops_working(client: TestClient, keys: MemoryKeyStore) -> None:
    key = _key(keys, "search")
    assert _search(client, key) == 200
    key_id = parse_key(key)
    assert key_id is not None and asyncio.run(keys.revoke(key_id))
    assert _search(client, key) == 401


def test_probes_stay_open_and_metrics_need_loopback_or_a_key(
    client: TestClient, keys: MemoryKeyStore
) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/metrics").status_code == 401  # from 203.0.113.9
    admin = _key(keys, "admin")
    assert client.get("/metrics", headers={"Authorization": f"Bearer {admin}"}).status_code == 200


def test_rate_limit_answers_429_with_retry_after_and_uploads_cost_more(
    keys: MemoryKeyStore, listening_port: int, make_png: object
) -> None:
    with _client(keys, listening_port, limit="6/minute") as c:
        key = _key(keys, "search")
        other = _key(keys, "search")
        auth = {"Authorization": f"Bearer {key}"}
        png = make_png((200, 30, 30))  # type: ignore[operator]
        upload = c.post("/v1/search", files={"file": ("a.png", png, "image/png")}, headers=auth)
        assert upload.status_code == 200  # cost 5 of 6
        assert _search(c, key) == 200  # 6 of 6
        r = c.post("/v1/search", json={"text": "cats"}, headers=auth)
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["type"] == "RateLimitedError"
        assert _search(c, other) == 200  # limits are per key


def test_a_key_store_outage_keeps_recently_verified_keys(
    client: TestClient, keys: MemoryKeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    known, unknown = _key(keys, "search"), _key(keys, "search")
    assert _search(client, known) == 200

    async def down(key_id: str) -> None:
        raise KeyStoreUnavailableError("redis down")

    monkeypatch.setattr(keys, "_get", down)
    assert _search(client, known) == 200  # verified a moment ago
    r = client.post("/v1/search", json={"text": "x"}, headers={"X-API-Key": unknown})
    assert r.status_code == 503 and r.json()["error"]["retriable"] is True


def test_scopes_of_routes() -> None:
    assert required_scope("POST", "/v1/search") == "search"
    assert required_scope("GET", "/v1/trends") == "search"
    assert required_scope("DELETE", "/v1/posts/{post_id:path}") == "admin"
    assert required_scope("POST", "/v1/posts") == "write"
    assert required_scope("GET", "/healthz") is None
