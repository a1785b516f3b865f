"""The media fetcher connects to the address it checked, re-checks every redirect, and
ends every fetch by its total time limit.

Servers are local (loopback only; reached as "public" hosts through a test network
backend that maps a public-looking address to a loopback port and refuses every other
address, so no test traffic leaves the machine). Each server stops by itself.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpcore
import httpx
import pytest

from crossfeed.core.schema import MediaItem
from crossfeed.streams.exceptions import MediaError, MediaFetchError, MediaRefusedError
from crossfeed.streams.media import MediaFetcher, MediaPolicy
from crossfeed.streams.pinned_http import PIN_EXTENSION, PinnedTransport

PUBLIC = "93.184.215.14"  # what the test resolver answers for public names; never dialled
Handler = Callable[[str], bytes | Iterator[bytes]]


class Server:
    """A tiny HTTP/1.0 server on ``host``: ``routes[path] -> response bytes`` (or chunks,
    sent one by one). Records the paths it was asked for; stops within ``lifetime_s``."""

    def __init__(self, routes: dict[str, Handler], host: str = "127.0.0.1", port: int = 0):
        self.routes = routes
        self.requests: list[str] = []
        self._sock = socket.create_server((host, port))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self, lifetime_s: float = 30.0) -> None:
        end = time.monotonic() + lifetime_s
        while not self._stop.is_set() and time.monotonic() < end:
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(5)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                data = conn.recv(4096)
                if not data:
                    return
                head += data
            path = head.split(b" ", 2)[1].decode()
            host = next(
                (
                    line.split(b":", 1)[1].strip().decode()
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"host:")
                ),
                "",
            )
            self.requests.append(f"{host}{path}")
            handler = self.routes.get(path.split("?", 1)[0])
            body = handler(path) if handler else b"HTTP/1.0 404 Not Found\r\n\r\n"
            for chunk in [body] if isinstance(body, bytes) else body:
                if self._stop.is_set():
                    return
                conn.sendall(chunk)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()


def ok(body: bytes) -> Handler:
    return lambda _: b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def redirect(location: str) -> Handler:
    return lambda _: f"HTTP/1.0 302 Found\r\nLocation: {location}\r\n\r\n".encode()


def drip(head_first: bool, interval_s: float = 0.1, count: int = 100) -> Handler:
    """One byte every ``interval_s`` (``count`` times at most): of the body, or of the
    response head itself."""
    response = b"HTTP/1.0 200 OK\r\nContent-Length: 100000\r\n\r\n"

    def chunks(_: str) -> Iterator[bytes]:
        if head_first:
            yield response
        for i in range(count):
            time.sleep(interval_s)
            yield response[i : i + 1] if not head_first and i < len(response) else b"x"

    return chunks


@pytest.fixture
def servers() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(routes: dict[str, Handler], **kw: Any) -> Server:
        server = Server(routes, **kw)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


class FakeInternet(httpcore.NetworkBackend):
    """Dials ``PUBLIC`` as a loopback port; refuses everything else (records all)."""

    def __init__(self, public_port: int) -> None:
        self.public_port = public_port
        self.dialled: list[str] = []
        self._real = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, *a: Any, **k: Any):  # type: ignore[no-untyped-def, override]
        self.dialled.append(host)
        if host != PUBLIC:
            raise httpcore.ConnectError(f"test network: {host} is unreachable")
        return self._real.connect_tcp("127.0.0.1", self.public_port, timeout)


def _resolver(answers: dict[str, list[str]], calls: list[str] | None = None):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        return answers.get(host, [PUBLIC])

    return resolve


def _url(path: str, host: str = "media.example") -> MediaItem:
    return MediaItem(kind="image", url=f"http://{host}{path}")


# --------------------------------------------------------------------------- pinning


def test_rebinding_cannot_reach_another_address(
    servers: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check sees one address, the system resolver would now answer another: the
    fetch goes to the address that was checked (before: httpx resolved again and got the
    second answer). Both on loopback, allowed here by the private-host switch."""
    checked = servers({"/a.png": ok(b"checked server")}, host="127.0.0.1")
    other = servers({"/a.png": ok(b"rebound server")}, host="127.0.0.2", port=checked.port)
    real_getaddrinfo = socket.getaddrinfo

    def rebound(host: Any, *args: Any, **kwargs: Any) -> Any:  # the connect-time answer
        if host == "rebind.test":
            host = "127.0.0.2"
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebound)
    calls: list[str] = []
    fetcher = MediaFetcher(
        MediaPolicy(allow_private_hosts=True),
        resolver=_resolver({"rebind.test": ["127.0.0.1"]}, calls),
    )
    try:
        data = fetcher.fetch(_url("/a.png", f"rebind.test:{checked.port}"))
    finally:
        fetcher.close()
    assert data == b"checked server"
    assert calls == ["rebind.test"]  # resolved once, by the check
    assert other.requests == []
    assert checked.requests == [f"rebind.test:{checked.port}/a.png"]  # Host: the name


def test_a_public_check_never_dials_loopback(
    servers: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The classic attack: public at check time, 127.0.0.1 at connect time."""
    secret = servers({"/a.png": ok(b"internal secret")})
    public = servers({"/a.png": ok(b"public picture")})
    real_getaddrinfo = socket.getaddrinfo

    def rebound(host: Any, *args: Any, **kwargs: Any) -> Any:  # the connect-time answer
        if host == "media.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", secret.port))]
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebound)
    net = FakeInternet(public.port)
    fetcher = MediaFetcher(MediaPolicy(), resolver=_resolver({}), network_backend=net)
    try:
        assert fetcher.fetch(_url("/a.png")) == b"public picture"
    finally:
        fetcher.close()
    assert net.dialled == [PUBLIC] and secret.requests == []


def test_a_request_without_a_vetted_address_is_refused() -> None:
    with (
        httpx.Client(transport=PinnedTransport()) as client,
        pytest.raises(httpx.ConnectError, match="no vetted address"),
    ):
        client.get("http://127.0.0.1:9/")
    with httpx.Client(transport=PinnedTransport()) as client, pytest.raises(httpx.ConnectError):
        client.get("http://127.0.0.1:9/", extensions={PIN_EXTENSION: "127.0.0.1"})


# --------------------------------------------------------------------------- redirects

HOSTILE_LOCATIONS = [
    "http://127.0.0.1:{secret}/a.png",
    "http://localhost:{secret}/a.png",
    "http://[::1]:{secret}/a.png",
    "http://[::ffff:127.0.0.1]:{secret}/a.png",
    "http://2130706433:{secret}/a.png",  # 127.0.0.1 as one number
    "http://10.0.0.1/a.png",
    "http://192.168.1.1/a.png",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://internal.example/a.png",  # a name that resolves to a private address
    "file:///etc/passwd",
    "gopher://127.0.0.1:{secret}/",
]


@pytest.mark.parametrize("location", HOSTILE_LOCATIONS)
def test_redirects_to_private_metadata_and_other_schemes_are_refused(
    servers: Callable[..., Server], location: str
) -> None:
    secret = servers({"/a.png": ok(b"internal secret")})
    target = location.format(secret=secret.port)
    public = servers(
        {"/start": redirect("/hop"), "/hop": redirect(target)}  # a chain: public, then not
    )
    net = FakeInternet(public.port)
    resolver = _resolver(
        {"internal.example": ["192.168.7.7"], "2130706433": ["127.0.0.1"], "localhost": ["::1"]}
    )
    fetcher = MediaFetcher(MediaPolicy(), resolver=resolver, network_backend=net)
    try:
        with pytest.raises(MediaRefusedError):
            fetcher.fetch(_url("/start"))
    finally:
        fetcher.close()
    assert net.dialled == [PUBLIC, PUBLIC]  # the two public hops, nothing after
    assert secret.requests == []


def test_metadata_is_refused_even_when_private_hosts_are_allowed() -> None:
    fetcher = MediaFetcher(
        MediaPolicy(allow_private_hosts=True),
        resolver=_resolver({"meta.example": ["169.254.169.254"], "v6.example": ["fd00:ec2::254"]}),
    )
    for url in (
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/",
        "http://meta.example/",
        "http://v6.example/",
        "http://[fe80::1]/",
    ):
        with pytest.raises(MediaRefusedError):
            fetcher.check_url(url)
    fetcher.check_url("http://127.0.0.1/a.png")  # the switch allows loopback, as asked


def test_redirect_chains_are_followed_and_capped(servers: Callable[..., Server]) -> None:
    public = servers(
        {
            "/1": redirect("/2"),
            "/2": redirect("http://cdn.example/3"),
            "/3": redirect("/img"),
            "/img": ok(b"picture"),
            "/loop": redirect("/loop"),
        }
    )
    fetcher = MediaFetcher(
        MediaPolicy(), resolver=_resolver({}), network_backend=FakeInternet(public.port)
    )
    try:
        assert fetcher.fetch(_url("/1")) == b"picture"
        with pytest.raises(MediaError, match="redirected more than"):
            fetcher.fetch(_url("/loop"))
    finally:
        fetcher.close()


# --------------------------------------------------------------------------- time and bytes


@pytest.mark.parametrize("head_first", [True, False], ids=["dripping body", "dripping head"])
def test_a_slow_drip_server_is_cut_at_the_total_time(
    servers: Callable[..., Server], head_first: bool
) -> None:
    """Each byte arrives well within the 5 s per-read timeout, yet the fetch (retries
    included) ends at the 1 s total limit."""
    server = servers({"/slow": drip(head_first)})
    fetcher = MediaFetcher(
        MediaPolicy(allow_private_hosts=True, fetch_timeout_s=5.0, fetch_total_s=1.0),
        resolver=_resolver({"127.0.0.1": ["127.0.0.1"]}),
        sleep=lambda s: time.sleep(min(s, 0.05)),
    )
    started = time.monotonic()
    try:
        with pytest.raises(MediaError, match="longer than its 1 s limit") as info:
            fetcher.fetch(_url("/slow", f"127.0.0.1:{server.port}"))
    finally:
        fetcher.close()
    elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 1.8, elapsed
    assert not info.value.retriable


def test_bytes_are_capped_while_streaming(servers: Callable[..., Server]) -> None:
    big = b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 300_000  # no Content-Length to refuse early
    server = servers({"/big": lambda _: big})
    fetcher = MediaFetcher(
        MediaPolicy(allow_private_hosts=True, max_bytes=100_000),
        resolver=_resolver({"127.0.0.1": ["127.0.0.1"]}),
    )
    try:
        with pytest.raises(MediaError, match="100000-byte limit"):
            fetcher.fetch(_url("/big", f"127.0.0.1:{server.port}"))
    finally:
        fetcher.close()


def test_an_unreachable_address_is_a_retriable_fetch_error(servers: Callable[..., Server]) -> None:
    net = FakeInternet(public_port=9)
    fetcher = MediaFetcher(
        MediaPolicy(),
        resolver=_resolver({"gone.example": ["8.8.4.4"]}),
        network_backend=net,
        sleep=lambda _: None,
    )
    try:
        with pytest.raises(MediaFetchError, match="gave up after 3 attempts"):
            fetcher.fetch(_url("/a.png", "gone.example"))
    finally:
        fetcher.close()
    assert net.dialled == ["8.8.4.4"] * 3
