"""The shared core without a server: error mapping, Retry-After, the retry decision."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

from crossfeed.client import RetryPolicy
from crossfeed.client._core import error_from_response, parse_retry_after, retry_on
from crossfeed.client.exceptions import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    StaleCursorError,
    UnauthorizedError,
    UnavailableError,
)


def _answer(status: int, body: object = None, **headers: str) -> httpx.Response:
    request = httpx.Request("GET", "http://api.test/v1/x")
    if body is None:
        return httpx.Response(status, headers=headers, text="oops", request=request)
    return httpx.Response(status, headers=headers, json=body, request=request)


def _error(kind: str, message: str) -> dict:
    return {"error": {"type": kind, "message": message, "retriable": False}}


@pytest.mark.parametrize(
    ("status", "kind", "cls"),
    [
        (404, "NotFoundError", NotFoundError),
        (409, "ModelVersionConflictError", ConflictError),
        (409, "StaleCursorError", StaleCursorError),
        (422, "BadRequestError", BadRequestError),
        (413, "PayloadTooLargeError", BadRequestError),
        (401, "Unauthorized", UnauthorizedError),
        (403, "ForbiddenError", ForbiddenError),
        (429, "TooManyRequests", RateLimitedError),
        (503, "IndexUnavailableError", UnavailableError),
        (500, "InternalError", ServerError),
        (502, "", ServerError),
        (418, "", BadRequestError),
    ],
)
def test_errors_map_by_status_and_type(status: int, kind: str, cls: type) -> None:
    err = error_from_response(_answer(status, _error(kind, "why") if kind else None))
    assert type(err) is cls
    assert err.status == status
    assert err.message == ("why" if kind else httpx.codes.get_reason_phrase(status))


def test_forbidden_is_a_kind_of_unauthorized() -> None:
    assert issubclass(ForbiddenError, UnauthorizedError)


def test_a_type_never_widens_the_status_class() -> None:
    # A 404 whose body claims StaleCursorError is still a NotFoundError.
    assert type(error_from_response(_answer(404, _error("StaleCursorError", "x")))) is NotFoundError


def test_retry_after_seconds_and_dates() -> None:
    now = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0  # past
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert parse_retry_after("nan") is None
    err = error_from_response(
        _answer(429, _error("RateLimited", "slow down"), **{"Retry-After": "7"})
    )
    assert isinstance(err, RateLimitedError) and err.retry_after == 7.0


def test_retry_decision() -> None:
    policy = RetryPolicy(max_retry_after_s=10)
    hook = retry_on(policy, idempotent=True)
    unavailable = error_from_response(_answer(503, _error("X", "down"), **{"Retry-After": "3"}))
    assert hook(unavailable) == 3.0
    long_wait = error_from_response(_answer(503, _error("X", "down"), **{"Retry-After": "99"}))
    assert hook(long_wait) == 10.0
    assert hook(error_from_response(_answer(503, _error("X", "down")))) is True
    request = httpx.Request("GET", "http://x")
    assert hook(httpx.ConnectError("refused", request=request)) is True
    assert hook(httpx.RemoteProtocolError("dropped", request=request)) is True
    assert hook(httpx.ReadTimeout("slow", request=request)) is False
    for status in (400, 404, 409, 422, 429, 500):
        assert hook(error_from_response(_answer(status, _error("X", "no")))) is False
    # A request that may have reached the server is retried only when idempotent.
    once = retry_on(policy, idempotent=False)
    assert once(httpx.RemoteProtocolError("dropped", request=request)) is False
    assert once(httpx.ConnectError("refused", request=request)) is True
