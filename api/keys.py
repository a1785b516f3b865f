"""API keys: created, listed and revoked by operators, checked by the API.

A key reads ``cfk_<id>_<secret>``. Only its SHA-256 is stored (in Redis, one hash field
per key id, under ``<CROSSFEED_REDIS_PREFIX>:apikeys``), with its name, scopes and
creation time: the key itself is shown once, when created, and never again.

Scopes: ``search`` (search, posts, trends, subscriptions), ``write`` (anything that adds
posts), ``admin`` (erasure, keys, collections; it includes the other two).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from crossfeed.exceptions import CrossfeedError, InvalidInputError

SCOPES = ("search", "write", "admin")
_KEY_RE = re.compile(r"^cfk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")
MAX_NAME_CHARS = 100


class KeyStoreUnavailableError(CrossfeedError):
    """The key store (Redis) cannot be reached."""

    retriable = True


@dataclass(frozen=True)
class ApiKey:
    """What is known about a key: never the key itself."""

    id: str
    name: str
    scopes: frozenset[str]
    created_at: datetime
    digest: str = field(repr=False)

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "scopes": sorted(self.scopes),
            "created_at": self.created_at.isoformat(),
        }


def check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(scopes)
    unknown = sorted(chosen - set(SCOPES))
    if unknown or not chosen:
        raise InvalidInputError(f"scopes must be a non-empty subset of {list(SCOPES)}")
    return chosen


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh ``(key id, key)``."""
    key_id = secrets.token_hex(6)
    return key_id, f"cfk_{key_id}_{secrets.token_urlsafe(32)}"


def parse_key(key: str) -> str | None:
    """The key id of a well-formed key, else None."""
    match = _KEY_RE.match(key)
    return match.group(1) if match else None


def _record(key_id: str, raw: str | bytes) -> ApiKey:
    data = json.loads(raw)
    return ApiKey(
        id=key_id,
        name=str(data.get("name", "")),
        scopes=frozenset(data.get("scopes", ())),
        created_at=datetime.fromisoformat(data["created_at"]),
        digest=str(data["sha256"]),
    )


class KeyStore(ABC):
    """Where key records live. Implementations map engine failures to
    :class:`KeyStoreUnavailableError`."""

    @abstractmethod
    async def _get(self, key_id: str) -> str | bytes | None: ...

    @abstractmethod
    async def _put(self, key_id: str, record: str) -> None: ...

    @abstractmethod
    async def _delete(self, key_id: str) -> bool: ...

    @abstractmethod
    async def _all(self) -> dict[str, str | bytes]: ...

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    async def create(self, scopes: Iterable[str], name: str = "") -> tuple[ApiKey, str]:
        """A new key with ``scopes``; returns its record and the key (shown once)."""
        chosen = check_scopes(scopes)
        if len(name) > MAX_NAME_CHARS or any(ord(c) < 0x20 for c in name):
            raise InvalidInputError(f"a key name is at most {MAX_NAME_CHARS} printable characters")
        key_id, key = new_key()
        created = datetime.now(UTC)
        sha = digest(key)
        record = {
            "name": name,
            "scopes": sorted(chosen),
            "created_at": created.isoformat(),
            "sha256": sha,
        }
        await self._put(key_id, json.dumps(record))
        return ApiKey(key_id, name, chosen, created, sha), key

    async def verify(self, key: str) -> ApiKey | None:
        """The key's record when ``key`` is a live key, else None (constant-time compare)."""
        key_id = parse_key(key)
        if key_id is None:
            return None
        raw = await self._get(key_id)
        if raw is None:
            return None
        found = _record(key_id, raw)
        return found if hmac.compare_digest(found.digest, digest(key)) else None

    async def list(self) -> list[ApiKey]:
        records = [_record(k, v) for k, v in (await self._all()).items()]
        return sorted(records, key=lambda r: (r.created_at, r.id))

    async def revoke(self, key_id: str) -> bool:
        """Forget ``key_id``; True when it existed."""
        return await self._delete(key_id)


class MemoryKeyStore(KeyStore):
    """Process-local keys (tests, and an API that holds no Redis)."""

    def __init__(self) -> None:
        self._records: dict[str, str] = {}

    async def _get(self, key_id: str) -> str | None:
        return self._records.get(key_id)

    async def _put(self, key_id: str, record: str) -> None:
        self._records[key_id] = record

    async def _delete(self, key_id: str) -> bool:
        return self._records.pop(key_id, None) is not None

    async def _all(self) -> dict[str, str | bytes]:
        return dict(self._records)


class RedisKeyStore(KeyStore):
    """Keys in one Redis hash, ``<prefix>:apikeys``: key id -> JSON record."""

    def __init__(self, url: str, prefix: str, timeout_s: float = 2.0) -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self.hash_key = f"{prefix}:apikeys"

    async def _call(self, fn: Any, *args: Any) -> Any:
        import redis.exceptions

        try:
            return await fn(*args)
        except redis.exceptions.RedisError as exc:
            raise KeyStoreUnavailableError(f"the key store (Redis) is unavailable: {exc}") from exc

    async def _get(self, key_id: str) -> bytes | None:
        result: bytes | None = await self._call(self._redis.hget, self.hash_key, key_id)
        return result

    async def _put(self, key_id: str, record: str) -> None:
        await self._call(self._redis.hset, self.hash_key, key_id, record)

    async def _delete(self, key_id: str) -> bool:
        return bool(await self._call(self._redis.hdel, self.hash_key, key_id))

    async def _all(self) -> dict[str, str | bytes]:
        raw = await self._call(self._redis.hgetall, self.hash_key)
        return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}

    async def close(self) -> None:
        await self._redis.aclose()
