"""IndexEpoch over the real Redis at REDIS_URL, under a unique key prefix."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest
import redis
import redis.asyncio as aioredis

from crossfeed.core.settings import RedisSettings
from crossfeed.indexer.epoch import AsyncIndexEpoch, IndexEpoch, epoch_key
from crossfeed.indexer.exceptions import IndexUnavailableError

pytestmark = pytest.mark.integration


@pytest.fixture
def prefix(engines: object, unique_name: Callable[[str], str]) -> Iterator[str]:
    value = unique_name("api_test")
    yield value
    client = redis.Redis.from_url(RedisSettings().url.get_secret_value())
    client.delete(epoch_key(value))
    client.close()


def test_epoch_starts_at_zero_and_bumps(prefix: str) -> None:
    settings = RedisSettings(CROSSFEED_REDIS_PREFIX=prefix)
    epoch = IndexEpoch.from_settings(settings)
    try:
        assert epoch.current() == 0
        assert epoch.bump() == 1
        assert epoch.bump() == 2
        assert epoch.current() == 2
        assert epoch.key == f"{prefix}:index:epoch"
    finally:
        epoch.close()


async def test_async_epoch_sees_the_same_counter(prefix: str) -> None:
    sync = IndexEpoch.from_settings(RedisSettings(CROSSFEED_REDIS_PREFIX=prefix))
    client = aioredis.Redis.from_url(RedisSettings().url.get_secret_value())
    try:
        sync.bump()
        async_epoch = AsyncIndexEpoch(client, prefix)
        assert await async_epoch.current() == 1
        assert await async_epoch.bump() == 2
        assert sync.current() == 2
    finally:
        sync.close()
        await client.aclose()


def test_unreachable_redis_is_retriable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    epoch = IndexEpoch.from_settings(RedisSettings(REDIS_URL=f"redis://127.0.0.1:{port}/0"))
    with pytest.raises(IndexUnavailableError) as info:
        epoch.bump()
    assert info.value.retriable
