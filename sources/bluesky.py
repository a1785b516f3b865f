"""The Bluesky connector: Jetstream over WebSocket -> ``posts.raw``.

It subscribes to ``<url>?wantedCollections=app.bsky.feed.post`` (plus ``wantedDids``
when given, and ``maxMessageSizeBytes``), reads JSON messages with the ``websockets``
library (keep-alive pings: a dead connection is noticed within ~40 s) and turns
them into events with :mod:`crossfeed.sources.jetstream`.

Cursor: the ``time_us`` of the last event read, saved after each flush. A
(re)connection asks for ``cursor = last - rewind`` (5 s by default), so nothing
between the last saved event and the drop is missed; events already seen in this
process are recognised by their key and dropped (counted as ``duplicate``).
Jetstream delivers at least once, and a restart from a saved cursor replays the
rewind window: the stages downstream are idempotent (posts are keyed by id).

Reconnection: handshake failures and dropped connections are retried with
exponential back-off (stamina), forever; a 4xx answer to the handshake (other
than 429) stops the connector (:class:`SourceRefusedError`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import stamina
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from crossfeed import __version__
from crossfeed.sources.base import Connector, Malformed, PostSink, SourceEvent
from crossfeed.sources.exceptions import (
    MalformedEventError,
    SourceConfigError,
    SourceRefusedError,
)
from crossfeed.sources.jetstream import POST_COLLECTION, BlobUrls, parse_message

log = logging.getLogger(__name__)

DEFAULT_URL = "wss://jetstream2.us-east.bsky.network/subscribe"
MAX_MESSAGE_BYTES = 1_000_000  # asked of the server; the client accepts twice that
MAX_WANTED_DIDS = 10_000
# Event keys remembered for dropping replays: at least the rewind window, at most this many.
MAX_REMEMBERED = 200_000


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise SourceConfigError(f"Jetstream URL must be ws:// or wss:// with a host: {url!r}")
    if parts.username or parts.password or parts.fragment:
        raise SourceConfigError("Jetstream URL must not carry credentials or a fragment")
    return url


def subscribe_url(url: str, *, cursor_us: int | None, dids: Sequence[str] = ()) -> str:
    """``url`` with the subscription's query (existing parameters are kept)."""
    parts = urlsplit(url)
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query)
        if k not in ("wantedCollections", "cursor", "wantedDids", "maxMessageSizeBytes")
    ]
    query.append(("wantedCollections", POST_COLLECTION))
    query.extend(("wantedDids", did) for did in dids)
    query.append(("maxMessageSizeBytes", str(MAX_MESSAGE_BYTES)))
    if cursor_us is not None:
        query.append(("cursor", str(cursor_us)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _transient(exc: Exception) -> bool:
    """Worth another try: network errors, timeouts, 429 and 5xx answers."""
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        return status == 429 or status >= 500
    return isinstance(exc, OSError | TimeoutError | WebSocketException)


class BlueskyConnector(Connector):
    source = "bluesky"

    def __init__(
        self,
        sink: PostSink,
        *,
        url: str = DEFAULT_URL,
        dids: Sequence[str] = (),
        blob_urls: BlobUrls | None = None,
        rewind_s: float = 5.0,
        wait_initial_s: float = 0.5,
        wait_max_s: float = 30.0,
        ping_interval_s: float = 20.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(sink, endpoint=check_url(url), **kwargs)
        if len(dids) > MAX_WANTED_DIDS:
            raise SourceConfigError(f"at most {MAX_WANTED_DIDS} DIDs, got {len(dids)}")
        self.url = url
        self.dids = tuple(dids)
        self.blob_urls = blob_urls or BlobUrls()
        self.rewind_us = int(rewind_s * 1_000_000)
        self.wait_initial_s = wait_initial_s
        self.wait_max_s = wait_max_s
        self.ping_interval_s = ping_interval_s
        self.cursor_us: int | None = None  # time_us of the newest event read
        self._seen: OrderedDict[str, int] = OrderedDict()  # event key -> time_us
        self.connections = 0

    # ------------------------------------------------------------------ cursor

    def position(self) -> Any:
        return self.cursor_us

    def restore(self, cursor: Any) -> None:
        if isinstance(cursor, int) and not isinstance(cursor, bool) and cursor > 0:
            self.cursor_us = cursor
            log.info("bluesky: resuming from cursor %d (minus %d us)", cursor, self.rewind_us)

    def _resume_from(self) -> int | None:
        return None if self.cursor_us is None else max(1, self.cursor_us - self.rewind_us)

    # ------------------------------------------------------------------ dedupe

    def _first_time(self, key: str, time_us: int) -> bool:
        if key in self._seen:
            return False
        self._seen[key] = time_us
        horizon = (self.cursor_us or time_us) - 2 * self.rewind_us
        while self._seen and (
            len(self._seen) > MAX_REMEMBERED or next(iter(self._seen.values())) < horizon
        ):
            self._seen.popitem(last=False)
        return True

    # ------------------------------------------------------------------ reading

    def _on_message(self, raw: str | bytes) -> SourceEvent | None:
        self.mark_alive()
        try:
            message = parse_message(raw, self.blob_urls)
        except MalformedEventError as exc:
            data = raw if isinstance(raw, bytes) else raw.encode("utf-8", errors="replace")
            return Malformed(exc.label, exc.message, data)
        if not self._first_time(message.key, message.time_us):
            self.count("duplicate")
            return None
        if self.cursor_us is None or message.time_us > self.cursor_us:
            self.cursor_us = message.time_us
        lag = time.time() - message.time_us / 1_000_000
        self.metrics.event_lag.labels(source=self.source).set(max(0.0, lag))
        return message.event

    async def _connect(self) -> ClientConnection:
        """An open WebSocket, retrying transient failures with back-off, forever."""
        async for attempt in stamina.retry_context(
            on=_transient,
            attempts=None,
            timeout=None,
            wait_initial=self.wait_initial_s,
            wait_max=self.wait_max_s,
        ):
            with attempt:
                uri = subscribe_url(self.url, cursor_us=self._resume_from(), dids=self.dids)
                if attempt.num > 1:
                    log.info("bluesky: connecting to %s (try %d)", self.url, attempt.num)
                return await connect(
                    uri,
                    max_size=2 * MAX_MESSAGE_BYTES,
                    open_timeout=10,
                    ping_interval=self.ping_interval_s,
                    ping_timeout=self.ping_interval_s,
                    close_timeout=2,
                    user_agent_header=f"crossfeed/{__version__}",
                    compression=None,
                )
        raise AssertionError("unreachable")

    async def stream(self) -> AsyncIterator[SourceEvent]:
        idle = 0  # connections in a row that brought no message
        while True:
            try:
                ws = await self._connect()
            except InvalidStatus as exc:
                raise SourceRefusedError(
                    f"Jetstream at {self.url} refused the subscription: "
                    f"HTTP {exc.response.status_code}"
                ) from exc
            self.connections += 1
            if self.connections > 1:
                self.metrics.reconnects.labels(source=self.source).inc()
            self.set_connected(True)
            log.info("bluesky: connected to %s (cursor %s)", self.url, self._resume_from())
            received = 0
            try:
                async for raw in ws:
                    received += 1
                    event = self._on_message(raw)
                    if event is not None:
                        yield event
                log.info("bluesky: %s closed the connection; reconnecting", self.url)
            except (OSError, TimeoutError, WebSocketException) as exc:
                log.warning("bluesky: connection to %s lost (%s); reconnecting", self.url, exc)
            finally:
                self.set_connected(False)
                await ws.close()
            # A server that hangs up before sending anything is not hammered.
            idle = 0 if received else idle + 1
            if idle:
                await asyncio.sleep(min(self.wait_max_s, self.wait_initial_s * 2 ** (idle - 1)))
