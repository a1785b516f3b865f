"""The repost store: first claim wins, a post never duplicates itself, keys expire."""

from __future__ import annotations

import socket
import uuid
from typing import Any

import pytest

from crossfeed.streams.dedupe import DedupeStore, InMemoryDedupeStore, RedisDedupeStore
from crossfeed.streams.exceptions import DedupeUnavailableError


async def _check_contract(store: DedupeStore) -> None:
    h = uuid.uuid4().hex
    assert await store.claim(h, "first") == "first"
    assert await store.claim(h, "second") == "first"
    assert await store.claim(h, "first") == "first"  # replay after a restart
    assert await store.claim(uuid.uuid4().hex, "second") == "second"


async def test_in_memory_contract() -> None:
    await _check_contract(InMemoryDedupeStore())


async def test_in_memory_expiry() -> None:
    now = [0.0]
    store = InMemoryDedupeStore(ttl_s=10, clock=lambda: now[0])
    assert await store.claim("h", "a") == "a"
    now[0] = 9.0
    assert await store.claim("h", "b") == "a"
    now[0] = 10.5
    assert await store.claim("h", "b") == "b"


@pytest.mark.integration
@pytest.mark.usefixtures("engines")
async def test_redis_contract_and_ttl(redis_dedupe: Any) -> None:
    store, client, prefix = redis_dedupe
    await _check_contract(store)
    keys = [k async for k in client.scan_iter(f"{prefix}:dedupe:*")]
    assert len(keys) == 2
    ttls = [await client.ttl(k) for k in keys]
    assert all(0 < t <= 60 for t in ttls)


async def test_redis_unreachable_is_retriable() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = RedisDedupeStore(f"redis://127.0.0.1:{port}/0", key_prefix="x", ttl_s=5, timeout_s=1)
    with pytest.raises(DedupeUnavailableError) as info:
        await store.claim("h", "p")
    assert info.value.retriable
    await store.close()
