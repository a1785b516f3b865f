"""What the sync and async clients share: configuration, retries, errors, event streams.

Everything here is free of I/O: the two clients differ only in how they send a
request (``httpx.Client`` or ``httpx.AsyncClient``) and how they sleep; building
requests and reading answers (:mod:`crossfeed.client._operations`), mapping errors and
deciding about retries happens once, here.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

from crossfeed import __version__
from crossfeed.api.models import ErrorResponse
from crossfeed.client.exceptions import (
    ApiResponseError,
    BadRequestError,
    ClientError,
    ClientInputError,
    ConflictError,
    ConnectionFailedError,
    ForbiddenError,
    InvalidCursorError,
    NotFoundError,
    ProtocolError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
    StaleCursorError,
    UnauthorizedError,
    UnavailableError,
)
from crossfeed.core.settings import ClientSettings

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

API_KEY_HEADER = "X-API-Key"
USER_AGENT = f"crossfeed-client/{__version__}"


@dataclass(frozen=True)
class RetryPolicy:
    """Retries with exponential back-off and jitter, for connection errors and 503 only.

    ``attempts`` counts every try (1 = no retry); ``timeout_s`` bounds all tries of one
    call together. A 503's ``Retry-After`` replaces the back-off, up to
    ``max_retry_after_s`` (a longer one is waited that long, not longer).
    """

    attempts: int = 4
    timeout_s: float | None = 60.0
    wait_initial_s: float = 0.2
    wait_max_s: float = 5.0
    wait_jitter_s: float = 0.5
    max_retry_after_s: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ClientInputError("RetryPolicy.attempts must be at least 1")

    @classmethod
    def none(cls) -> RetryPolicy:
        return cls(attempts=1)

    def stamina_kwargs(self) -> dict[str, Any]:
        return {
            "attempts": self.attempts,
            "timeout": self.timeout_s,
            "wait_initial": self.wait_initial_s,
            "wait_max": self.wait_max_s,
            "wait_jitter": self.wait_jitter_s,
        }


@dataclass(frozen=True)
class ClientConfig:
    """A client's address, headers, timeouts and retries, checked once."""

    url: str
    headers: dict[str, str]
    timeout: httpx.Timeout
    retry: RetryPolicy
    event_read_timeout_s: float
    has_api_key: bool = field(default=False)

    @classmethod
    def build(
        cls,
        url: str | None,
        *,
        api_key: str | SecretStr | None,
        timeout: float | httpx.Timeout | None,
        retry: RetryPolicy | int | None,
        headers: Mapping[str, str] | None,
        event_read_timeout_s: float,
    ) -> ClientConfig:
        """Arguments win over ``CROSSFEED_API_URL`` / ``CROSSFEED_API_KEY`` /
        ``CROSSFEED_CLIENT_TIMEOUT`` / ``CROSSFEED_CLIENT_RETRIES``."""
        env = ClientSettings()
        base = (url or env.resolved_url()).rstrip("/")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ClientInputError(f"API URL {base!r} is not an http(s) URL with a host")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ClientInputError("API URL must not carry credentials, a query or a fragment")
        key = api_key if api_key is not None else env.api_key
        secret = key.get_secret_value() if isinstance(key, SecretStr) else key
        all_headers = {"User-Agent": USER_AGENT, **(headers or {})}
        if secret:
            if any(ord(c) < 0x21 or ord(c) > 0x7E for c in secret):
                raise ClientInputError("API key contains characters a header cannot carry")
            all_headers[API_KEY_HEADER] = secret
        if isinstance(timeout, httpx.Timeout):
            http_timeout = timeout
        else:
            seconds = env.timeout_s if timeout is None else float(timeout)
            if not seconds > 0:
                raise ClientInputError("timeout must be positive")
            http_timeout = httpx.Timeout(seconds, connect=min(seconds, 10.0))
        if isinstance(retry, RetryPolicy):
            policy = retry
        else:
            policy = RetryPolicy(attempts=1 + (env.retries if retry is None else int(retry)))
        return cls(
            url=base,
            headers=all_headers,
            timeout=http_timeout,
            retry=policy,
            event_read_timeout_s=event_read_timeout_s,
            has_api_key=bool(secret),
        )

    def httpx_kwargs(self) -> dict[str, Any]:
        return {"base_url": self.url, "headers": self.headers, "timeout": self.timeout}

    def __repr__(self) -> str:  # never the key
        return f"ClientConfig(url={self.url!r}, api_key={'set' if self.has_api_key else 'unset'})"


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class ApiRequest:
    """One HTTP request, relative to the client's base URL."""

    method: str
    path: str
    json: Any = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    data: dict[str, str] | None = None
    params: dict[str, str] | None = None

    def httpx_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"method": self.method, "url": self.path}
        for name in ("json", "files", "data", "params"):
            value = getattr(self, name)
            if value is not None:
                kwargs[name] = value
        return kwargs


@dataclass(frozen=True)
class Operation(Generic[T]):
    """A request and how to read its answer. ``idempotent`` operations may be retried after
    the request was sent (a dropped answer); others only when it never left."""

    request: ApiRequest
    parse: Callable[[httpx.Response], T]
    idempotent: bool = True


def parse_model(model: type[M]) -> Callable[[httpx.Response], M]:
    """A parser: the model from a 2xx answer, else the mapped error."""

    def parse(response: httpx.Response) -> M:
        if not response.is_success:
            raise error_from_response(response)
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise ProtocolError(
                f"{response.request.method} {response.request.url.path} answered "
                f"{response.status_code} with a body that is not a {model.__name__}: {exc}"
            ) from exc

    return parse


def parse_json(response: httpx.Response) -> Any:
    if not response.is_success:
        raise error_from_response(response)
    try:
        return response.json()
    except ValueError as exc:
        raise ProtocolError(f"{response.request.url.path} did not answer JSON") from exc


# --------------------------------------------------------------------------- errors


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - (now or dt.datetime.now(dt.UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


_BY_STATUS: dict[int, type[ApiResponseError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: BadRequestError,
    415: BadRequestError,
    422: BadRequestError,
    429: RateLimitedError,
    503: UnavailableError,
}
# Error types of the API body that have their own, narrower class.
_BY_TYPE: dict[str, type[ApiResponseError]] = {
    "StaleCursorError": StaleCursorError,
    "InvalidCursorError": InvalidCursorError,
}


def error_from_response(response: httpx.Response) -> ApiResponseError:
    """The exception for an error answer, from its status and the API's error body."""
    status = response.status_code
    kind, message, details = "", "", None
    try:
        body = ErrorResponse.model_validate_json(response.content).error
        kind, message, details = body.type, body.message, body.details
    except ValidationError:
        text = response.text.strip()
        message = text[:200] if text and "json" in response.headers.get("content-type", "") else ""
    if not message:
        message = response.reason_phrase or "error"
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else BadRequestError
    narrower = _BY_TYPE.get(kind)
    if narrower is not None and issubclass(narrower, cls):
        cls = narrower
    return cls(
        message,
        status=status,
        type=kind,
        details=details,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )


# httpx errors after which the request certainly never reached the server.
_NOT_SENT: tuple[type[Exception], ...] = (httpx.ConnectError, httpx.ConnectTimeout)
# ...and those after which it may have: retried for idempotent requests only.
_DROPPED: tuple[type[Exception], ...] = (
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
)


def retry_on(policy: RetryPolicy, *, idempotent: bool) -> Callable[[Exception], bool | float]:
    """stamina's ``on`` hook: retry connection errors and 503 (for ``Retry-After`` seconds
    when the API says so), never a 4xx or another 5xx, never a read timeout. A request
    that may have reached the server is retried only when it is ``idempotent``."""

    def hook(exc: Exception) -> bool | float:
        if isinstance(exc, UnavailableError):
            if exc.retry_after is not None:
                return min(exc.retry_after, policy.max_retry_after_s)
            return True
        if isinstance(exc, _NOT_SENT):
            return True
        return idempotent and isinstance(exc, _DROPPED)

    return hook


def transport_error(exc: httpx.TransportError, url: str) -> ClientError:
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return RequestTimeoutError(f"the crossfeed API at {url} did not answer in time ({exc})")
    reason = str(exc) or type(exc).__name__
    return ConnectionFailedError(f"cannot reach the crossfeed API at {url}: {reason}")


# --------------------------------------------------------------------------- event streams


@dataclass(frozen=True)
class ServerEvent:
    """One server-sent event. ``id`` is the last event id seen on the stream (what a
    reconnect sends as ``Last-Event-ID``)."""

    event: str
    data: str
    id: str | None = None
    retry_ms: int | None = None

    def json(self) -> Any:
        try:
            return json.loads(self.data)
        except ValueError as exc:
            raise ProtocolError(f"event {self.event!r} data is not JSON") from exc


def event_request(
    path: str, params: Mapping[str, str] | None, last_event_id: str | None
) -> tuple[ApiRequest, dict[str, str]]:
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    return ApiRequest("GET", path, params=dict(params) if params else None), headers


def check_event_response(response: httpx.Response, body: bytes) -> bool:
    """True when ``response`` opens an event stream; False for 204 (the server says the
    stream is over: do not reconnect). Anything else raises its mapped error."""
    if response.status_code == 204:
        return False
    if not response.is_success:
        raise error_from_response(
            httpx.Response(
                response.status_code,
                headers=response.headers,
                content=body,
                request=response.request,
            )
        )
    content_type = response.headers.get("content-type", "").partition(";")[0].strip()
    if content_type != "text/event-stream":
        raise ProtocolError(f"expected an event stream, got content type {content_type!r}")
    return True


# Errors of an open stream after which the client reconnects (with Last-Event-ID).
STREAM_DROPS: tuple[type[Exception], ...] = (
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.ReadTimeout,
)

__all__ = [
    "ApiRequest",
    "ClientConfig",
    "ClientError",
    "Operation",
    "RetryPolicy",
    "ServerEvent",
]
