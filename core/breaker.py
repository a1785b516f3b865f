"""Circuit breakers for optional engines: a dead Redis costs one fast failure per interval.

Several parts of crossfeed use Redis for things that make it better, not for things it
cannot work without: the search cache, repost detection, the index epoch, standing-query
matches, thumbnails, freshness. When Redis is away each of them degrades (see the
README's "Redis down"), but each call would still wait for a connection or a socket
timeout. An :class:`Outage` wraps those calls in one ``circuitbreaker.CircuitBreaker``
per process and engine: after ``failures`` consecutive failures the circuit opens and
calls fail at once with :class:`~crossfeed.exceptions.CircuitOpenError`; every
``reset_s`` seconds one call is let through as a trial, and its success closes the
circuit again.

It also says so: a warning once when the engine goes away and a note when it is back
(never one line per call), and a gauge ``crossfeed_degraded{what=...}`` (1 while open)
that callers pass in from their own metrics bundle.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from circuitbreaker import STATE_CLOSED, STATE_OPEN, CircuitBreaker

from crossfeed.exceptions import CircuitOpenError, is_retriable

if TYPE_CHECKING:
    from crossfeed.core.settings import RedisSettings

log = logging.getLogger(__name__)

T = TypeVar("T")


class _Settable(Protocol):
    def set(self, value: float) -> None: ...


def engine_failure(exc_type: type[BaseException], exc: BaseException) -> bool:
    """What counts against an engine: a retriable error (connection refused, a timeout,
    an ``...UnavailableError`` of the error tree, Redis' own connection errors). Bad
    input or a bug is not the engine's fault and leaves the circuit alone."""
    if is_retriable(exc):
        return True
    try:
        import redis.exceptions

        return isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError)
    except ImportError:  # pragma: no cover - redis is a dependency
        return False


class Outage:
    """One engine's circuit breaker, shared by every caller of that engine in a process."""

    def __init__(
        self,
        engine: str,
        *,
        failures: int = 2,
        reset_s: float = 5.0,
        gauge: _Settable | None = None,
        retry_delay_s: float = 0.05,
    ) -> None:
        self.engine = engine
        self.reset_s = reset_s
        self._breaker = CircuitBreaker(
            failure_threshold=max(1, failures),
            recovery_timeout=max(0.001, reset_s),
            expected_exception=engine_failure,
            name=f"crossfeed-{engine}",
        )
        self._gauges: list[_Settable] = [gauge] if gauge is not None else []
        self._retry_delay_s = retry_delay_s
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self.outages = 0  # how many times the circuit opened

    def watch(self, gauge: _Settable) -> None:
        """Also set ``gauge`` (1 while open, 0 once closed)."""
        self._gauges.append(gauge)
        gauge.set(1.0 if self.down else 0.0)

    @property
    def down(self) -> bool:
        """The circuit is not closed: the engine failed and has not answered since."""
        return self._breaker.state != STATE_CLOSED

    @property
    def state(self) -> str:
        return str(self._breaker.state)

    def _refuse(self) -> None:
        if self._breaker.state == STATE_OPEN:
            raise CircuitOpenError(
                f"{self.engine} is unavailable (circuit open, next try in "
                f"{max(0, self._breaker.open_remaining)} s)"
            )

    def _after(self) -> None:
        """Log and set gauges on a change of state (called after every outcome)."""
        down = self._breaker.state == STATE_OPEN
        with self._lock:
            if down and self._down_since is None:
                self._down_since = time.monotonic()
                self.outages += 1
                log.warning(
                    "%s unavailable (%s): degrading, one trial call every %.0f s",
                    self.engine,
                    self._breaker.last_failure,
                    self.reset_s,
                )
            elif not down and self._down_since is not None and self._breaker.closed:
                log.warning(
                    "%s is back after %.1f s", self.engine, time.monotonic() - self._down_since
                )
                self._down_since = None
            else:
                return
        for gauge in self._gauges:
            gauge.set(1.0 if down else 0.0)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args)`` through the breaker (blocking code). Raises CircuitOpenError at
        once while open; an engine failure is counted and re-raised."""
        self._refuse()
        try:
            return self._breaker.call(fn, *args, **kwargs)  # type: ignore[no-any-return]
        finally:
            self._after()

    async def acall(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """``await fn(*args)`` through the breaker (asyncio code)."""
        self._refuse()
        try:
            return await self._breaker.call_async(fn, *args, **kwargs)  # type: ignore[no-any-return]
        finally:
            self._after()

    async def attempt(self, fn: Callable[[], Awaitable[T]]) -> T:
        """``await fn()``, tried again after an engine failure until it succeeds or the
        circuit opens (then CircuitOpenError): a blip costs a retry, an outage
        ``failures`` tries and then nothing until the next trial."""
        while True:
            try:
                return await self.acall(fn)
            except CircuitOpenError:
                raise
            except Exception as exc:
                if not engine_failure(type(exc), exc):
                    raise
                if self.down:
                    raise CircuitOpenError(f"{self.engine} is unavailable: {exc}") from exc
                await asyncio.sleep(self._retry_delay_s)

    def attempt_sync(self, fn: Callable[[], T]) -> T:
        """:meth:`attempt` for blocking code."""
        while True:
            try:
                return self.call(fn)
            except CircuitOpenError:
                raise
            except Exception as exc:
                if not engine_failure(type(exc), exc):
                    raise
                if self.down:
                    raise CircuitOpenError(f"{self.engine} is unavailable: {exc}") from exc
                time.sleep(self._retry_delay_s)


def redis_outage(settings: RedisSettings, gauge: _Settable | None = None) -> Outage:
    """The breaker around the configured Redis (CROSSFEED_REDIS_BREAKER_*)."""
    return Outage(
        "redis",
        failures=settings.breaker_failures,
        reset_s=settings.breaker_reset_s,
        gauge=gauge,
    )
