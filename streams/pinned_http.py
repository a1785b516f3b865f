"""An httpx transport that connects only to an address the caller vetted, within a deadline.

:class:`~crossfeed.streams.media.MediaFetcher` resolves a URL's host itself, checks every
address, and passes the one it checked with the request (:class:`Pin`). This transport
then connects to exactly that address: the host name is still what the URL says (the
``Host`` header, TLS SNI and certificate verification use it), but nothing resolves it a
second time, so a DNS answer that changes between the check and the connection (DNS
rebinding) cannot reach another address. A request without a pin is refused.

Every socket operation (connect, TLS handshake, each read and write) gets at most the
time left before the pin's deadline, so a server that drips one byte at a time cannot
hold the calling thread past it. Each request uses a new connection (no pooling: a pooled
connection would be keyed by address and could serve another host name).

Built on httpx's transport and httpcore's network-backend interfaces; the maintained
SSRF libraries found were async-only, requests-based or alpha, and none bounded total time.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

PIN_EXTENSION = "crossfeed.pin"


@dataclass(frozen=True)
class Pin:
    """Where a request may connect: one vetted IP address, until ``deadline`` (monotonic)."""

    address: str
    deadline: float

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("the fetch ran past its total time limit")
        return left


def _clamp(timeout: float | None, pin: Pin) -> float:
    left = pin.remaining()
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every operation ends by the pin's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, pin: Pin) -> None:
        self._inner = inner
        self._pin = pin

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _clamp(timeout, self._pin))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _clamp(timeout, self._pin))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        tls = self._inner.start_tls(ssl_context, server_hostname, _clamp(timeout, self._pin))
        return _DeadlineStream(tls, self._pin)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects to the pinned address whatever host name httpcore asks for."""

    def __init__(self, pin: Pin, inner: httpcore.NetworkBackend) -> None:
        self._pin = pin
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(
            self._pin.address, port, _clamp(timeout, self._pin), local_address, socket_options
        )
        return _DeadlineStream(stream, self._pin)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are never fetched")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.TimeoutException, httpx.ReadTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
)


@contextlib.contextmanager
def _httpx_errors(request: httpx.Request) -> Iterator[None]:
    """httpcore's errors as the httpx ones callers catch."""
    try:
        yield
    except Exception as exc:
        for source, target in _ERRORS:
            if isinstance(exc, source):
                raise target(str(exc) or type(exc).__name__, request=request) from exc
        raise


class _Body(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes], pool: httpcore.ConnectionPool, request: Any):
        self._stream = stream
        self._pool = pool
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        with _httpx_errors(self._request):
            yield from self._stream

    def close(self) -> None:
        try:
            closer = getattr(self._stream, "close", None)
            if closer is not None:
                closer()
        finally:
            self._pool.close()


class PinnedTransport(httpx.BaseTransport):
    """Sends each request over a new connection to the address in its :class:`Pin`.

    ``network_backend`` is what opens sockets (tests pass one that records or redirects
    connections); by default httpcore's synchronous backend.
    """

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool = True,
        network_backend: httpcore.NetworkBackend | None = None,
    ) -> None:
        self._ssl = (
            verify
            if isinstance(verify, ssl.SSLContext)
            else httpx.create_ssl_context(verify=verify)
        )
        self._backend = network_backend or httpcore.SyncBackend()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        pin = request.extensions.get(PIN_EXTENSION)
        if not isinstance(pin, Pin):
            raise httpx.ConnectError("refusing to connect: no vetted address", request=request)
        pool = httpcore.ConnectionPool(
            ssl_context=self._ssl,
            max_connections=1,
            max_keepalive_connections=0,
            network_backend=_PinnedBackend(pin, self._backend),
        )
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,  # type: ignore[arg-type]
            extensions={"timeout": request.extensions.get("timeout", {})},
        )
        try:
            with _httpx_errors(request):
                response = pool.handle_request(core_request)
        except BaseException:
            pool.close()
            raise
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream, pool, request),  # type: ignore[arg-type]
            extensions=response.extensions,
        )
