"""Turning a post's media reference into bytes, then pixels, without trusting it.

Three sources, each with its own guard:

* ``data_base64``: decoded and size-capped.
* ``path``: resolved (symlinks followed) and refused unless the real file lies
  under one of the configured media roots; relative paths are looked up under
  each root in turn. No roots configured = no local files at all.
* ``url``: http(s) only, no credentials in the URL, every address the host
  resolves to must be public (loopback, private, link-local, multicast and
  reserved ranges are refused unless explicitly allowed; cloud metadata names and
  addresses always), and the connection goes to the very address that was checked
  (:mod:`crossfeed.streams.pinned_http`: the host is resolved once, by us, so a DNS
  answer that changes after the check cannot redirect it). Redirects are followed by
  hand, each hop checked and pinned again; the body is streamed under a byte cap, and
  the whole fetch (attempts and redirects included) under a total time cap that every
  socket operation respects, so a slow-drip server cannot hold a worker thread.
  Environment proxies are not used (a proxy would resolve the host itself).

Everything here is blocking and runs in the embed stage's thread pool.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from PIL import Image

from crossfeed.core.schema import MediaItem
from crossfeed.core.settings import Settings
from crossfeed.encoders.media import DEFAULT_MAX_MEDIA_FRAMES
from crossfeed.streams.exceptions import (
    MediaError,
    MediaFetchError,
    MediaRefusedError,
    MediaTooLargeError,
)

log = logging.getLogger(__name__)

MAX_REDIRECTS = 3
# Cloud metadata endpoints: refused even when private hosts are allowed.
METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.internal",
    }
)
METADATA_ADDRESSES = frozenset(
    {"169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200"}
)
FETCH_ATTEMPTS = 3  # a dead URL must not stall a partition: then the post is dead-lettered
_CHUNK = 64 * 1024

Resolver = Callable[[str, int], Sequence[str]]


def _resolve_host(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_public_address(address: str) -> bool:
    """True for a globally routable unicast address (IPv4-mapped IPv6 unwrapped)."""
    ip = _ip(address)
    return ip.is_global and not ip.is_multicast


def is_metadata_address(address: str) -> bool:
    """True for cloud metadata endpoints and the link-local ranges they live in."""
    ip = _ip(address)
    return str(ip) in METADATA_ADDRESSES or ip.is_link_local


@dataclass(frozen=True)
class MediaPolicy:
    """Limits for fetching media; built from settings by :meth:`from_settings`."""

    media_roots: tuple[Path, ...] = ()
    max_bytes: int = 20 * 1024 * 1024
    fetch_timeout_s: float = 5.0  # each connect, read or write
    fetch_total_s: float = 30.0  # one whole fetch: attempts, redirects and body
    allowed_schemes: tuple[str, ...] = ("http", "https")
    allow_private_hosts: bool = False

    @classmethod
    def from_settings(cls, settings: Settings, *, allow_private_hosts: bool = False) -> MediaPolicy:
        return cls(
            media_roots=tuple(settings.stream.media_roots),
            max_bytes=settings.encoder.max_media_bytes,
            fetch_timeout_s=settings.stream.fetch_timeout_s,
            fetch_total_s=settings.stream.fetch_total_s,
            allowed_schemes=tuple(s.lower() for s in settings.stream.allowed_url_schemes),
            allow_private_hosts=allow_private_hosts,
        )


class MediaFetcher:
    """Fetches the bytes of a :class:`MediaItem` under a :class:`MediaPolicy`. Thread-safe."""

    def __init__(
        self,
        policy: MediaPolicy,
        *,
        resolver: Resolver = _resolve_host,
        transport: Any = None,
        network_backend: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.policy = policy
        self._resolver = resolver
        # Default: a PinnedTransport (over ``network_backend``, an httpcore backend that
        # tests replace). A test's own httpx transport (MockTransport) replaces it whole.
        self._transport = transport
        self._network_backend = network_backend
        self._sleep = sleep
        self._roots = tuple(p.resolve() for p in policy.media_roots)
        self._client: Any = None
        # The embed stage fetches from several threads: one client, made once.
        self._client_lock = threading.Lock()

    # ------------------------------------------------------------------ entry point

    def fetch(self, item: MediaItem) -> bytes:
        """The media's bytes. Raises a :class:`MediaError` subclass saying why not."""
        if item.data_base64:
            return self._inline(item)
        if item.path:
            return self._read_path(item.path)
        if item.url:
            return self._fetch_url_with_retries(
                item.url, time.monotonic() + self.policy.fetch_total_s
            )
        raise MediaError("media has no source")

    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # ------------------------------------------------------------------ inline

    def _inline(self, item: MediaItem) -> bytes:
        # base64 is 4/3 of the payload: refuse before decoding an oversized blob.
        assert item.data_base64 is not None
        if len(item.data_base64) * 3 // 4 > self.policy.max_bytes + 3:
            raise MediaTooLargeError(f"inline media is over the {self.policy.max_bytes}-byte limit")
        try:
            data = item.inline_bytes()
        except ValueError as exc:
            raise MediaError(str(exc)) from exc
        if len(data) > self.policy.max_bytes:
            raise MediaTooLargeError(
                f"inline media is {len(data)} bytes, over the {self.policy.max_bytes}-byte limit"
            )
        return data

    # ------------------------------------------------------------------ paths

    def resolve_path(self, raw: str) -> Path:
        """The real path of ``raw`` if it lies under a media root; raises otherwise."""
        if not raw or "\x00" in raw:
            raise MediaRefusedError("media path is empty or contains a NUL byte")
        if not self._roots:
            raise MediaRefusedError("local media paths are disabled (no media roots configured)")
        given = Path(raw)
        candidates = [given] if given.is_absolute() else [root / given for root in self._roots]
        for candidate in candidates:
            try:
                real = candidate.resolve(strict=True)
            except (OSError, RuntimeError):  # missing, or a symlink loop
                continue
            if self._inside_roots(real):
                return real
            raise MediaRefusedError(f"media path {raw!r} is outside the allowed media roots")
        # Nothing exists: refuse what would escape anyway, else report it missing.
        if not any(self._inside_roots(Path(os.path.normpath(c))) for c in candidates):
            raise MediaRefusedError(f"media path {raw!r} is outside the allowed media roots")
        raise MediaError(f"media file {raw!r} not found under the media roots")

    def _inside_roots(self, path: Path) -> bool:
        return any(path.is_relative_to(root) for root in self._roots)

    def _read_path(self, raw: str) -> bytes:
        real = self.resolve_path(raw)
        if not real.is_file():
            raise MediaError(f"media path {raw!r} is not a regular file")
        size = real.stat().st_size
        if size > self.policy.max_bytes:
            raise MediaTooLargeError(
                f"media file {raw!r} is {size} bytes, over the {self.policy.max_bytes}-byte limit"
            )
        try:
            with real.open("rb") as fh:
                data = fh.read(self.policy.max_bytes + 1)
        except OSError as exc:
            raise MediaError(f"cannot read media file {raw!r}: {exc}") from exc
        if len(data) > self.policy.max_bytes:  # grew since stat()
            raise MediaTooLargeError(f"media file {raw!r} is over the byte limit")
        return data

    # ------------------------------------------------------------------ URLs

    def check_url(self, url: str) -> None:
        """Refuse URLs with a disallowed scheme, credentials, or a non-public host."""
        self.vet_url(url)

    def vet_url(self, url: str) -> str:
        """The address a fetch of ``url`` must connect to, or a :class:`MediaError`.

        Refuses a disallowed scheme, credentials, a host that is a loopback or metadata
        name, and a host any of whose addresses is not public (with private hosts
        allowed: any metadata or link-local address). The host is resolved here, once.
        """
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise MediaRefusedError(f"media url is malformed: {exc}") from exc
        scheme = parts.scheme.lower()
        if scheme not in self.policy.allowed_schemes:
            raise MediaRefusedError(f"media url scheme {scheme!r} is not allowed")
        if parts.username or parts.password:
            raise MediaRefusedError("media url must not carry credentials")
        host = parts.hostname
        if not host:
            raise MediaRefusedError("media url has no host")
        name = host.rstrip(".").lower()
        if name in METADATA_HOSTS:
            raise MediaRefusedError(f"media url host {host!r} is a cloud metadata endpoint")
        if not self.policy.allow_private_hosts and (
            name == "localhost" or name.endswith(".localhost")
        ):
            raise MediaRefusedError(f"media url host {host!r} is a loopback name")
        try:
            addresses = [str(ipaddress.ip_address(host))]
        except ValueError:
            try:
                addresses = list(self._resolver(host, port or (443 if scheme == "https" else 80)))
            except OSError as exc:
                raise MediaFetchError(f"cannot resolve media host {host!r}: {exc}") from exc
        if not addresses:
            raise MediaFetchError(f"media host {host!r} has no address")
        try:
            metadata = [a for a in addresses if is_metadata_address(a)]
            bad = metadata or [
                a
                for a in addresses
                if not (self.policy.allow_private_hosts or is_public_address(a))
            ]
        except ValueError as exc:
            raise MediaFetchError(f"media host {host!r} resolved to a malformed address") from exc
        if bad:
            raise MediaRefusedError(
                f"media url host {host!r} resolves to a non-public address ({bad[0]})"
            )
        return addresses[0]

    def _http(self) -> Any:
        """The shared httpx client (thread-safe; httpx.Client itself is)."""
        with self._client_lock:
            if self._client is None:
                import httpx

                from crossfeed.streams.pinned_http import PinnedTransport

                self._client = httpx.Client(
                    timeout=self.policy.fetch_timeout_s,
                    follow_redirects=False,
                    transport=self._transport
                    or PinnedTransport(network_backend=self._network_backend),
                    headers={"User-Agent": "crossfeed-media-fetcher"},
                    trust_env=False,  # a proxy from the environment would resolve the host
                )
            return self._client

    def _fetch_url_with_retries(self, url: str, deadline: float) -> bytes:
        delay = 0.5
        for attempt in range(1, FETCH_ATTEMPTS + 1):
            try:
                return self.fetch_url(url, deadline=deadline)
            except MediaError as exc:
                out_of_time = time.monotonic() + delay >= deadline
                if not exc.retriable or attempt == FETCH_ATTEMPTS or out_of_time:
                    if exc.retriable:
                        raise MediaFetchError(
                            f"{exc} (gave up after {FETCH_ATTEMPTS} attempts)"
                        ) from exc
                    raise
                log.info("media fetch failed (attempt %d), retrying: %s", attempt, exc)
                self._sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def fetch_url(self, url: str, *, deadline: float | None = None) -> bytes:
        """One attempt: vet, GET the vetted address with manual redirects, stream under the
        size cap, all before ``deadline`` (monotonic; default: the policy's total time)."""
        import httpx

        from crossfeed.streams.pinned_http import PIN_EXTENSION, Pin

        cap = self.policy.max_bytes
        total = self.policy.fetch_total_s
        if deadline is None:
            deadline = time.monotonic() + total
        for _ in range(MAX_REDIRECTS + 1):
            pin = Pin(self.vet_url(url), deadline)
            try:
                with self._http().stream("GET", url, extensions={PIN_EXTENSION: pin}) as resp:
                    if resp.is_redirect:
                        location = resp.headers.get("location")
                        if not location:
                            raise MediaError(f"media url redirect without Location ({url})")
                        url = urljoin(url, location)
                        continue
                    if resp.status_code != 200:
                        status = resp.status_code
                        message = f"media url answered HTTP {status}"
                        if status >= 500 or status == 429:
                            raise MediaFetchError(message)
                        raise MediaError(message)
                    declared = resp.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > cap:
                        raise MediaTooLargeError(
                            f"media url declares {declared} bytes, over the {cap}-byte limit"
                        )
                    chunks: list[bytes] = []
                    received = 0
                    for chunk in resp.iter_bytes(_CHUNK):
                        received += len(chunk)
                        if received > cap:
                            raise MediaTooLargeError(f"media url body is over the {cap}-byte limit")
                        chunks.append(chunk)
                    return b"".join(chunks)
            except httpx.HTTPError as exc:
                if time.monotonic() >= deadline:
                    raise MediaError(
                        f"fetching media url took longer than its {total:g} s limit"
                    ) from exc
                raise MediaFetchError(f"fetching media url failed: {exc}") from exc
        raise MediaError(f"media url redirected more than {MAX_REDIRECTS} times")


# --------------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class DecodeLimits:
    max_bytes: int
    max_pixels: int
    video_fps: float
    video_max_frames: int
    max_total_frames: int = DEFAULT_MAX_MEDIA_FRAMES

    @classmethod
    def from_settings(cls, settings: Settings) -> DecodeLimits:
        enc = settings.encoder
        return cls(
            max_bytes=enc.max_media_bytes,
            max_pixels=enc.max_image_pixels,
            video_fps=enc.video_fps,
            video_max_frames=enc.video_max_frames,
            max_total_frames=enc.max_media_frames,
        )


def decode_image_bytes(data: bytes, limits: DecodeLimits) -> Image.Image:
    """An RGB image; raises ``MediaDecodeError`` (encoders) when corrupt or too large."""
    from crossfeed.encoders.media import decode_image

    return decode_image(
        data, limits.max_bytes, limits.max_pixels, max_total_frames=limits.max_total_frames
    )


def decode_video_bytes(data: bytes, limits: DecodeLimits) -> list[tuple[float, Image.Image]]:
    """Sampled ``(timestamp_s, RGB frame)`` pairs of a video, in time order; raises
    ``MediaDecodeError`` (encoders) when undecodable."""
    from crossfeed.encoders.media import decode_video

    frames = decode_video(
        data,
        limits.video_fps,
        limits.video_max_frames,
        limits.max_bytes,
        max_pixels=limits.max_pixels,
        max_total_frames=limits.max_total_frames,
    )
    return list(frames)
