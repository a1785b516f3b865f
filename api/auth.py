"""Who may call what: API keys with scopes, and per-key rate limits.

Auth is on when ``CROSSFEED_API_AUTH=on``, or ``auto`` (the default) and the API binds to
anything but loopback: ``make demo`` on 127.0.0.1 needs no key, a public bind always does.
Keys travel as ``Authorization: Bearer <key>`` or ``X-API-Key``. Without a valid key: 401;
without the route's scope: 403. ``/healthz`` and ``/readyz`` stay open (probes);
``/metrics`` is open to loopback clients (or to all with ``CROSSFEED_METRICS_PUBLIC``).

Rate limits (``CROSSFEED_RATE_LIMIT``, per key, a moving window kept in Redis by the
``limits`` library) charge a request by its cost: an image upload (decode + image
tower) costs :data:`UPLOAD_COST` units, anything else one. Over the limit: 429 with
``Retry-After``.

Redis down: keys live only in Redis, so with auth on the API **fails closed**: a key that
cannot be checked is refused with 503 (retriable), never let in unchecked. The one
exception is a key this process verified in the last :data:`KEY_GRACE_S` seconds (it
cannot have been revoked meanwhile without Redis). Rate limits then count in this
process' memory (the same limit per key and process) until Redis answers again; the
change is logged once each way, not per request.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from crossfeed.api.exceptions import ForbiddenError, RateLimitedError, UnauthorizedError
from crossfeed.api.keys import ApiKey, KeyStore, KeyStoreUnavailableError
from crossfeed.core.settings import ApiSettings

log = logging.getLogger(__name__)

UPLOAD_COST = 5
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/redoc", "/"})
# A verified key stays valid this long in this process when Redis cannot be asked.
KEY_GRACE_S = 60.0


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def auth_enabled(api: ApiSettings) -> bool:
    mode = api.auth
    return mode == "on" or (mode == "auto" and not is_loopback(api.host))


def required_scope(method: str, path: str) -> str | None:
    """The scope a route needs (``path`` is the route's template); None = open."""
    if path in OPEN_PATHS or path.startswith("/static"):
        return None
    if method == "DELETE" and path.startswith("/v1/posts"):
        return "admin"
    if path.startswith(("/v1/keys", "/v1/collections", "/v1/admin")):
        return "admin"
    if method in ("POST", "PUT") and path == "/v1/posts":
        return "write"
    return "search"


def request_cost(request: Request) -> int:
    content_type = request.headers.get("content-type", "")
    return UPLOAD_COST if content_type.startswith("multipart/form-data") else 1


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.headers.get("x-api-key") or None


class RateLimits:
    """Per-key budgets in a moving window (``limits``; Redis-backed in production)."""

    def __init__(self, limit: str, storage: Any) -> None:
        from limits import parse
        from limits.aio.storage import MemoryStorage
        from limits.aio.strategies import MovingWindowRateLimiter

        self.item = parse(limit)
        self._limiter = MovingWindowRateLimiter(storage)
        # While the shared store is away: the same limit, counted in this process.
        self._local = MovingWindowRateLimiter(MemoryStorage())
        self.local_since: float | None = None  # when counting locally began (None: shared)

    @classmethod
    def for_redis(cls, limit: str, redis_url: str, prefix: str) -> RateLimits:
        from limits.aio.storage import RedisStorage

        uri = redis_url if redis_url.startswith("async+") else f"async+{redis_url}"
        storage = RedisStorage(uri, implementation="redispy", key_prefix=f"{prefix}:ratelimit")
        return cls(limit, storage)

    @classmethod
    def in_memory(cls, limit: str) -> RateLimits:
        from limits.aio.storage import MemoryStorage

        return cls(limit, MemoryStorage())

    async def charge(self, key_id: str, cost: int) -> float | None:
        """None when ``cost`` fits in the key's budget, else seconds until it would.
        The shared store unreachable: counted in this process instead (never open)."""
        try:
            retry_after = await self._hit(self._limiter, key_id, cost)
        except Exception as exc:  # the limiter's store is down: count here, say so once
            if self.local_since is None:
                self.local_since = time.monotonic()
                log.warning("rate limits counted in this process (store unavailable: %s)", exc)
            return await self._hit(self._local, key_id, cost)
        if self.local_since is not None:
            log.warning(
                "rate limits counted in the shared store again after %.0f s",
                time.monotonic() - self.local_since,
            )
            self.local_since = None
        return retry_after

    async def _hit(self, limiter: Any, key_id: str, cost: int) -> float | None:
        if await limiter.hit(self.item, key_id, cost=cost):
            return None
        stats = await limiter.get_window_stats(self.item, key_id)
        return max(1.0, math.ceil(stats.reset_time - time.time()))


@dataclass
class Access:
    """The access policy of one API process."""

    enabled: bool
    keys: KeyStore | None
    limits: RateLimits | None
    metrics_public: bool = False
    _verified: dict[str, tuple[ApiKey, float]] = field(default_factory=dict)

    async def check(self, request: Request) -> ApiKey | None:
        """Raise 401/403/429 as the request deserves; the caller's key when one applies."""
        route = request.scope.get("route")
        path = getattr(route, "path", request.url.path)
        if path == "/metrics":
            client = request.client.host if request.client else ""
            if self.metrics_public or not self.enabled or is_loopback(client):
                return None
            scope: str | None = "admin"
        else:
            scope = required_scope(request.method, path)
        if not self.enabled or scope is None:
            return None
        presented = presented_key(request)
        if not presented:
            raise UnauthorizedError("an API key is required (Authorization: Bearer <key>)")
        key = await self._verify(presented)
        if key is None:
            raise UnauthorizedError("the API key is not valid (revoked, or never issued)")
        if not key.allows(scope):
            raise ForbiddenError(f"this key lacks the {scope!r} scope")
        if self.limits is not None:
            await self._charge(key, request_cost(request))
        return key

    async def _verify(self, presented: str) -> ApiKey | None:
        assert self.keys is not None
        try:
            key = await self.keys.verify(presented)
        except KeyStoreUnavailableError:
            cached = self._verified.get(presented)
            if cached is not None and time.monotonic() - cached[1] < KEY_GRACE_S:
                log.warning("key store unavailable: using key %s verified earlier", cached[0].id)
                return cached[0]
            raise
        if key is None:
            self._verified.pop(presented, None)
        else:
            self._verified[presented] = (key, time.monotonic())
        return key

    async def _charge(self, key: ApiKey, cost: int) -> None:
        assert self.limits is not None
        retry_after = await self.limits.charge(key.id, cost)
        if retry_after is not None:
            raise RateLimitedError(
                f"rate limit of {self.limits.item} exceeded for key {key.id}",
                retry_after_s=retry_after,
            )
