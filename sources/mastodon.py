"""The Mastodon connector: the streaming API (server-sent events) -> ``posts.raw``.

``url`` is the instance (``https://mastodon.social``). The streaming host may differ
from it, so it is read from ``/api/v2/instance`` (``configuration.urls.streaming``;
``/api/v1/instance`` ``urls.streaming_api`` on older servers; the instance itself when
neither says). The stream is ``/api/v1/streaming/public`` (``/public/local`` with
``local``; ``?only_media=true`` with ``only_media``) or ``/api/v1/streaming/hashtag``
(``?tag=``, ``/hashtag/local``). Since Mastodon 4.2 every stream needs a user token:
it is sent as ``Authorization: Bearer``, never over plain http to another machine,
never logged.

Events are read with ``httpx-sse``; the bytes underneath are watched too, so the
heartbeats the server sends every ~15 s (comment lines) keep the liveness fresh,
and a connection with no byte for ``heartbeat_timeout_s`` is taken as dead and
re-opened (with back-off on failures, via stamina). A 401/403/404/422 answer stops
the connector (:class:`SourceRefusedError`): a bad token or stream, not a blip.

Catch-up: the stream has no replay, so after a reconnection (or a restart from the
saved cursor, the newest status id seen) the statuses published meanwhile are
fetched from the matching timeline (``/api/v1/timelines/public`` or ``/tag/<tag>``,
``min_id`` = the cursor, up to ``catch_up_max``) before the stream is read again;
statuses seen twice (the same id and edit time) are dropped as duplicates.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import stamina
from httpx_sse import EventSource, SSEError
from pydantic import SecretStr

from crossfeed import __version__
from crossfeed.sources.base import Connector, Malformed, PostSink, Skip, SourceEvent
from crossfeed.sources.exceptions import SourceConfigError, SourceRefusedError
from crossfeed.sources.mastodon_status import status_event, stream_event

log = logging.getLogger(__name__)

PAGE = 40  # the timelines API's largest page
REMEMBERED = 20_000
_REFUSED = {400, 401, 403, 404, 410, 422}
_DROPS = (httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, what: str, allow_insecure: bool = False) -> str:
    """An http(s) base URL without credentials; plain http only to this machine (a token
    travels with every request) unless ``allow_insecure``."""
    parts = urlsplit(url.rstrip("/"))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SourceConfigError(f"{what} must be an http(s) URL with a host: {url!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise SourceConfigError(f"{what} must not carry credentials, a query or a fragment")
    if parts.scheme == "http" and not _is_loopback(parts.hostname) and not allow_insecure:
        raise SourceConfigError(
            f"{what} {url!r} is plain http: the access token would travel in clear text "
            "(use https, or --allow-insecure on a trusted network)"
        )
    return url.rstrip("/")


def _id_key(status_id: str) -> tuple[int, str]:
    """Mastodon ids are numeric strings ordered by time: compare by length, then text."""
    return (len(status_id), status_id)


def _transient(exc: Exception) -> bool:
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code not in _REFUSED
    return isinstance(exc, httpx.TransportError)


class _Tapped:
    """A streaming response whose every chunk counts as a sign of life (heartbeats are
    comment lines, which the SSE parser drops before anyone sees them)."""

    def __init__(self, response: httpx.Response, connector: MastodonConnector) -> None:
        self._response = response
        self._connector = connector

    @property
    def headers(self) -> httpx.Headers:
        return self._response.headers

    async def aiter_text(self) -> AsyncIterator[str]:
        async for chunk in self._response.aiter_text():
            self._connector.mark_alive()
            if chunk.startswith(":") or "\n:" in chunk:
                self._connector.count("heartbeat")
            yield chunk


class MastodonConnector(Connector):
    source = "mastodon"

    def __init__(
        self,
        sink: PostSink,
        *,
        url: str,
        token: SecretStr,
        tag: str | None = None,
        local: bool = False,
        only_media: bool = False,
        catch_up: bool = True,
        catch_up_max: int = 400,
        heartbeat_timeout_s: float = 45.0,
        wait_initial_s: float = 0.5,
        wait_max_s: float = 30.0,
        allow_insecure: bool = False,
        **kwargs: Any,
    ) -> None:
        base = check_url(url, what="Mastodon URL", allow_insecure=allow_insecure)
        if not token.get_secret_value().strip():
            raise SourceConfigError(
                "Mastodon streams need an access token (since Mastodon 4.2, public ones too): "
                "--token-file or MASTODON_ACCESS_TOKEN"
            )
        if tag is not None and not tag.strip().lstrip("#"):
            raise SourceConfigError("--tag is empty")
        if tag is not None and only_media:
            raise SourceConfigError("--only-media works with the public timeline, not --tag")
        self.tag = tag.strip().lstrip("#") if tag else None
        stream_name = f"hashtag {self.tag}" if self.tag else "public"
        stream_name += " (local)" if local else ""
        super().__init__(sink, endpoint=f"{base} {stream_name}", **kwargs)
        self.url = base
        self.instance = urlsplit(base).netloc.lower()
        self._token = token
        self.local = local
        self.only_media = only_media
        self.catch_up = catch_up
        self.catch_up_max = catch_up_max
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.wait_initial_s = wait_initial_s
        self.wait_max_s = wait_max_s
        self.allow_insecure = allow_insecure
        self.last_id: str | None = None
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.connections = 0
        self.streaming_url: str | None = None

    # ------------------------------------------------------------------ cursor

    def position(self) -> Any:
        return self.last_id

    def restore(self, cursor: Any) -> None:
        if isinstance(cursor, str) and cursor.isalnum():
            self.last_id = cursor
            log.info("mastodon: resuming after status %s", cursor)

    def _first_time(self, status: Any) -> bool:
        """False for a status already produced in this version (catch-up overlaps)."""
        if not isinstance(status, dict) or not isinstance(status.get("id"), str):
            return True
        key = f"{status['id']}@{status.get('edited_at') or ''}"
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > REMEMBERED:
            self._seen.popitem(last=False)
        sid = status["id"]
        if self.last_id is None or _id_key(sid) > _id_key(self.last_id):
            self.last_id = sid
        return True

    # ------------------------------------------------------------------ endpoints

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._token.get_secret_value()}",
            "User-Agent": f"crossfeed/{__version__}",
        }

    def _stream_path(self) -> tuple[str, dict[str, str]]:
        local = "/local" if self.local else ""
        if self.tag:
            return f"/api/v1/streaming/hashtag{local}", {"tag": self.tag}
        return f"/api/v1/streaming/public{local}", {"only_media": "true"} if self.only_media else {}

    def _timeline_path(self) -> tuple[str, dict[str, str]]:
        params = {"local": "true"} if self.local else {}
        if self.only_media:
            params["only_media"] = "true"
        if self.tag:
            return f"/api/v1/timelines/tag/{quote(self.tag, safe='')}", params
        return "/api/v1/timelines/public", params

    async def _discover(self, http: httpx.AsyncClient) -> str:
        """The streaming API's base URL, as the instance advertises it."""
        for path, keys in (
            ("/api/v2/instance", ("configuration", "urls", "streaming")),
            ("/api/v1/instance", ("urls", "streaming_api")),
        ):
            try:
                response = await http.get(self.url + path)
                value: Any = response.json() if response.is_success else None
                for key in keys:
                    value = value.get(key) if isinstance(value, dict) else None
            except (httpx.HTTPError, ValueError) as exc:
                log.debug("mastodon: %s%s: %s", self.url, path, exc)
                continue
            if isinstance(value, str) and value:
                base = value.replace("wss://", "https://", 1).replace("ws://", "http://", 1)
                return check_url(
                    base, what="the instance's streaming URL", allow_insecure=self.allow_insecure
                )
        return self.url

    async def _open(self, http: httpx.AsyncClient) -> httpx.Response:
        assert self.streaming_url is not None
        path, params = self._stream_path()
        async for attempt in stamina.retry_context(
            on=_transient,
            attempts=None,
            timeout=None,
            wait_initial=self.wait_initial_s,
            wait_max=self.wait_max_s,
        ):
            with attempt:
                request = http.build_request(
                    "GET",
                    self.streaming_url + path,
                    params=params,
                    headers={"Accept": "text/event-stream", "Cache-Control": "no-store"},
                )
                response = await http.send(request, stream=True)
                if not response.is_success:
                    await response.aread()
                    await response.aclose()
                    response.raise_for_status()
                return response
        raise AssertionError("unreachable")

    async def _catch_up(self, http: httpx.AsyncClient) -> AsyncIterator[SourceEvent]:
        """Statuses newer than the cursor, oldest first, from the timeline API."""
        path, params = self._timeline_path()
        fetched = 0
        while self.last_id is not None and fetched < self.catch_up_max:
            query = {**params, "min_id": self.last_id, "limit": str(PAGE)}
            try:
                response = await http.get(self.url + path, params=query)
                response.raise_for_status()
                page = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("mastodon: catch-up from %s stopped: %s", self.url + path, exc)
                return
            if not isinstance(page, list) or not page:
                return
            statuses = [s for s in page if isinstance(s, dict) and isinstance(s.get("id"), str)]
            statuses.sort(key=lambda s: _id_key(s["id"]))
            before = self.last_id
            for status in statuses:
                fetched += 1
                raw = json.dumps(status).encode("utf-8")
                if self._first_time(status):
                    self.count("caught_up")
                    yield status_event(status, self.instance, raw)
                else:
                    self.count("duplicate")
            if len(page) < PAGE or self.last_id == before:
                return

    async def stream(self) -> AsyncIterator[SourceEvent]:
        timeout = httpx.Timeout(10.0, read=self.heartbeat_timeout_s)
        async with httpx.AsyncClient(headers=self._headers(), timeout=timeout) as http:
            self.streaming_url = await self._discover(http)
            idle = 0
            while True:
                try:
                    response = await self._open(http)
                except httpx.HTTPStatusError as exc:
                    raise SourceRefusedError(
                        f"{self.streaming_url} refused the stream: HTTP "
                        f"{exc.response.status_code} {exc.response.text[:200]}"
                    ) from exc
                self.connections += 1
                if self.connections > 1:
                    self.metrics.reconnects.labels(source=self.source).inc()
                self.set_connected(True)
                log.info("mastodon: streaming %s from %s", self.endpoint, self.streaming_url)
                received = 0
                try:
                    if self.catch_up and self.last_id is not None:
                        async for caught in self._catch_up(http):
                            yield caught
                    source = EventSource(_Tapped(response, self))  # type: ignore[arg-type]
                    async for sse in source.aiter_sse():
                        received += 1
                        event = self._read(sse.event, sse.data)
                        if event is not None:
                            yield event
                    log.info("mastodon: %s closed the stream; reconnecting", self.streaming_url)
                except _DROPS as exc:
                    reason = str(exc) or type(exc).__name__
                    log.warning("mastodon: stream dropped (%s); reconnecting", reason)
                except SSEError as exc:
                    raise SourceRefusedError(
                        f"{self.streaming_url}: not an event stream: {exc}"
                    ) from exc
                finally:
                    self.set_connected(False)
                    await response.aclose()
                idle = 0 if received else idle + 1
                if idle:
                    await asyncio.sleep(min(self.wait_max_s, self.wait_initial_s * 2 ** (idle - 1)))

    def _read(self, event: str, data: str) -> SourceEvent | None:
        """What one server-sent event means; None for a status already produced."""
        if event in ("update", "status.update"):
            try:
                status = json.loads(data)
            except ValueError:
                status = None
            if status is not None and not self._first_time(status):
                self.count("duplicate")
                return None
        meaning, _ = stream_event(event, data, self.instance)
        if isinstance(meaning, Skip | Malformed):
            log.debug("mastodon: %s event not produced: %s", event, meaning)
        return meaning
