"""The connector interface and the loop every connector shares.

A connector's :meth:`Connector.stream` connects to its service (and reconnects),
reads frames and yields what each one means: a :class:`Produce` (a post for
``posts.raw``), an :class:`Erase` (a delete: a tombstone, the post's key with a null
value), a :class:`Skip` (nothing to produce, counted by reason) or a
:class:`Malformed` (a frame that could not be read: dead-lettered with its reason,
never a crash). :meth:`Connector.run` hands them to a :class:`PostSink`, and every
``flush_interval_s`` flushes the sink and only then persists the connector's cursor,
so a cursor never runs ahead of what Kafka acknowledged (delivery is at least once).

Liveness: the connector calls :meth:`Connector.mark_alive` for everything the
service sends (heartbeats included). The seconds since then are a Prometheus gauge
and part of the status file ``crossfeed status`` shows; after ``quiet_warn_s``
without anything a warning is logged (and again each further ``quiet_warn_s``).

Stopping: set the ``stop`` event (the CLI does on SIGINT/SIGTERM); the loop stops
reading, flushes what it produced, saves the cursor and marks the status stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossfeed.core.schema import DeadLetter, Post, Stage
from crossfeed.sources.metrics import SourceMetrics
from crossfeed.sources.state import CursorStore, SourceStatus, write_status

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Produce:
    """A post to send to ``posts.raw``."""

    post: Post


@dataclass(frozen=True)
class Erase:
    """A post the author deleted: a tombstone (key = post id, value null)."""

    post_id: str


@dataclass(frozen=True)
class Skip:
    """Nothing to produce (another collection, an account event, an empty post...)."""

    reason: str


@dataclass(frozen=True)
class Malformed:
    """A frame that could not be read; dead-lettered with ``label`` and ``detail``."""

    label: str
    detail: str
    raw: bytes
    post_id: str | None = None
    stage: Stage = "parse"


SourceEvent = Produce | Erase | Skip | Malformed


def is_empty_post_error(errors: list[Any]) -> bool:
    """Whether a Post's validation failed only because it has no text, tags or media
    (a link card alone, a bare quote): nothing to index, skipped rather than dead-lettered."""
    return bool(errors) and all("no text, tags or media" in str(e.get("msg")) for e in errors)


# --------------------------------------------------------------------------- sink


class PostSink(ABC):
    """Where a connector's output goes (Kafka in production, a list in unit tests).

    ``send_*`` never block for long; :meth:`flush` waits until everything sent so far is
    acknowledged and raises :class:`~crossfeed.sources.exceptions.DeliveryError` if
    anything was not.
    """

    @abstractmethod
    def send_post(self, post: Post) -> None: ...

    @abstractmethod
    def send_tombstone(self, post_id: str) -> None: ...

    @abstractmethod
    def send_deadletter(self, letter: DeadLetter) -> None: ...

    @abstractmethod
    def flush(self, timeout_s: float = 30.0) -> None: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release the connection."""


# --------------------------------------------------------------------------- connector


@dataclass
class RunReport:
    counts: dict[str, int]
    reason: str


class Connector(ABC):
    """The shared loop; subclasses implement :meth:`stream` and the cursor methods."""

    source: str = "source"

    def __init__(
        self,
        sink: PostSink,
        *,
        endpoint: str,
        metrics: SourceMetrics | None = None,
        cursor_store: CursorStore | None = None,
        status_path: Path | None = None,
        metrics_url: str | None = None,
        quiet_warn_s: float = 30.0,
        flush_interval_s: float = 1.0,
        status_interval_s: float = 2.0,
        progress_interval_s: float = 30.0,
    ) -> None:
        self.sink = sink
        self.endpoint = endpoint
        self.metrics = metrics or SourceMetrics()
        self.cursor_store = cursor_store
        self.status_path = status_path
        self.metrics_url = metrics_url
        self.quiet_warn_s = quiet_warn_s
        self.flush_interval_s = flush_interval_s
        self.status_interval_s = status_interval_s
        self.progress_interval_s = progress_interval_s
        self.counts: dict[str, int] = {}
        self.started_at = time.time()
        self._last_alive = time.monotonic()
        self._last_alive_wall: float | None = None
        self._warned_at: float | None = None
        self._connected = False
        self._saved: Any = None  # the cursor last persisted
        self.metrics.seconds_since_event.labels(source=self.source).set_function(
            self.seconds_since_event
        )

    # ------------------------------------------------------------------ subclass API

    @abstractmethod
    def stream(self) -> AsyncIterator[SourceEvent]:
        """Connect, read and reconnect for as long as it runs; yield each event."""

    def position(self) -> Any:
        """The cursor covering every event yielded so far (JSON-serialisable), or None."""
        return None

    def restore(self, cursor: Any) -> None:  # noqa: B027 - optional hook
        """Resume from a persisted cursor (called once, before :meth:`stream`)."""

    # ------------------------------------------------------------------ liveness

    def mark_alive(self) -> None:
        """The service sent something (an event, a heartbeat)."""
        self._last_alive = time.monotonic()
        self._last_alive_wall = time.time()
        if self._warned_at is not None:
            log.info("%s: events are arriving again", self.source)
            self._warned_at = None

    def seconds_since_event(self) -> float:
        return time.monotonic() - self._last_alive

    def set_connected(self, connected: bool) -> None:
        self._connected = connected
        self.metrics.connected.labels(source=self.source).set(1 if connected else 0)

    def count(self, kind: str, n: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + n
        self.metrics.events.labels(source=self.source, kind=kind).inc(n)

    def _check_quiet(self) -> None:
        quiet = self.seconds_since_event()
        if quiet < self.quiet_warn_s:
            return
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at >= self.quiet_warn_s:
            self._warned_at = now
            log.warning(
                "%s: no event from %s for %.1f s (%s)",
                self.source,
                self.endpoint,
                quiet,
                "connected" if self._connected else "not connected",
            )

    # ------------------------------------------------------------------ the loop

    def handle(self, event: SourceEvent) -> None:
        """Hand one event to the sink and count it."""
        labels = {"source": self.source}
        if isinstance(event, Produce):
            self.sink.send_post(event.post)
            self.count("post")
            self.metrics.produced.labels(kind="post", **labels).inc()
        elif isinstance(event, Erase):
            self.sink.send_tombstone(event.post_id)
            self.count("delete")
            self.metrics.produced.labels(kind="tombstone", **labels).inc()
        elif isinstance(event, Skip):
            self.count("skipped")
            self.metrics.skipped.labels(reason=event.reason, **labels).inc()
        else:
            self.count("malformed")
            self.metrics.skipped.labels(reason=event.label, **labels).inc()
            log.debug("%s: dead-lettering a frame: %s", self.source, event.detail)
            self.sink.send_deadletter(
                DeadLetter.from_bytes(
                    event.stage, f"{self.source}: {event.detail}", event.raw, event.post_id
                )
            )
            self.metrics.produced.labels(kind="deadletter", **labels).inc()

    async def _flush(self) -> None:
        """Flush the sink, then persist the cursor that flush covered."""
        cursor = self.position()
        await asyncio.to_thread(self.sink.flush)
        if self.cursor_store is not None and cursor is not None and cursor != self._saved:
            await asyncio.to_thread(self.cursor_store.save, cursor)
            self._saved = cursor

    def status(self, *, running: bool = True, reason: str | None = None) -> SourceStatus:
        return SourceStatus(
            source=self.source,
            endpoint=self.endpoint,
            pid=os.getpid(),
            started_at=self.started_at,
            updated_at=time.time(),
            running=running,
            connected=self._connected and running,
            last_event_at=self._last_alive_wall,
            counts=dict(self.counts),
            cursor=self.position(),
            metrics_url=self.metrics_url,
            stopped_reason=reason,
        )

    def _write_status(self, *, running: bool = True, reason: str | None = None) -> None:
        if self.status_path is not None:
            try:
                write_status(self.status_path, self.status(running=running, reason=reason))
            except OSError as exc:
                log.warning("cannot write the status file %s: %s", self.status_path, exc)

    async def _housekeeping(self) -> None:
        next_status = 0.0
        next_progress = time.monotonic() + self.progress_interval_s
        while True:
            await asyncio.sleep(self.flush_interval_s)
            await self._flush()
            self._check_quiet()
            now = time.monotonic()
            if now >= next_status:
                self._write_status()
                next_status = now + self.status_interval_s
            if now >= next_progress:  # long work shows progress
                next_progress = now + self.progress_interval_s
                log.info(
                    "%s: %s; last event %.1f s ago",
                    self.source,
                    ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items())) or "nothing yet",
                    self.seconds_since_event(),
                )

    async def _consume(self) -> None:
        async for event in self.stream():
            self.handle(event)

    async def run(self, stop: asyncio.Event | None = None) -> RunReport:
        """Read until ``stop`` is set (or the stream ends or fails); always flush, save the
        cursor and mark the status stopped on the way out."""
        stop = stop or asyncio.Event()
        if self.cursor_store is not None:
            cursor = await asyncio.to_thread(self.cursor_store.load)
            if cursor is not None:
                self.restore(cursor)
        self._last_alive = time.monotonic()
        self._write_status()
        consume = asyncio.create_task(self._consume(), name=f"{self.source}-consume")
        housekeeping = asyncio.create_task(self._housekeeping(), name=f"{self.source}-flush")
        stopper = asyncio.create_task(stop.wait(), name=f"{self.source}-stop")
        reason = "stopped"
        try:
            done, _ = await asyncio.wait(
                {consume, housekeeping, stopper}, return_when=asyncio.FIRST_COMPLETED
            )
            for worker in (consume, housekeeping):
                error = worker.exception() if worker in done else None
                if error is not None:
                    reason = f"failed: {error}"
                    raise error
            if consume in done:
                reason = "the stream ended"
        finally:
            tasks: tuple[asyncio.Task[Any], ...] = (consume, housekeeping, stopper)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self.set_connected(False)
            try:
                await self._flush()
            finally:
                self._write_status(running=False, reason=reason)
        log.info("%s: %s; %s", self.source, reason, self.counts)
        return RunReport(counts=dict(self.counts), reason=reason)
