"""Index calls within a request's budget: a retriable engine error (Milvus restarting or
loading its collection) is retried with back-off before the request answers 503."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import anyio
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

from crossfeed.exceptions import is_retriable

log = logging.getLogger(__name__)

T = TypeVar("T")


async def engine_call(budget_s: float, fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` in a worker thread; retriable errors are retried for ``budget_s``
    seconds (0: once), then raised, which the error handlers answer with 503."""
    retrying = AsyncRetrying(
        retry=retry_if_exception(is_retriable),
        stop=stop_after_delay(budget_s),
        wait=wait_exponential_jitter(initial=0.1, max=1.0),
        reraise=True,
        before_sleep=lambda state: log.info(
            "engine call failed (attempt %d), retrying: %s",
            state.attempt_number,
            state.outcome.exception() if state.outcome else "?",
        ),
    )
    async for attempt in retrying:
        with attempt:
            return await anyio.to_thread.run_sync(fn, *args)
    raise AssertionError("unreachable")  # pragma: no cover
