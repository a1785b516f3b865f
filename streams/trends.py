"""The trends step of a worker: what the stages produce, counted by a :class:`TrendTracker`.

Two stages feed it, each with what only it sees:

* the index stage, after every accepted batch: one :class:`Observation` per post of the
  batch, with the vector of the serving model version that stands for the post (its text
  row; for a post without text, its first media row; video moments never), its
  normalized hashtags, author and event time (:func:`observations_from_rows`);
* the normalize stage, for reposts (``duplicate_of`` set): they are not embedded, so the
  index stage never sees them, yet they are attention for the original
  (:func:`repost_observation`).

The step is optional and must never hold indexing up: observations go to a bounded
queue and one daemon thread hands them to the tracker in batches (whatever queued up
while the previous call ran), off the event loop. A failing tracker (Redis away) costs
the batch, a log line and ``crossfeed_trends_errors``; a full queue (the tracker slower
than the stream) drops observations, counted in ``crossfeed_trends_dropped``. Replays
after a worker restart are harmless: the tracker counts a (post, author) once.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from crossfeed.core.schema import CleanPost
from crossfeed.exceptions import CrossfeedError
from crossfeed.indexer.base import IndexRow
from crossfeed.streams.metrics import WorkerMetrics
from crossfeed.trends.base import Observation, TrendTracker

if TYPE_CHECKING:
    from crossfeed.core.settings import Settings

log = logging.getLogger(__name__)

MAX_QUEUED = 50_000  # observations waiting for the tracker before new ones are dropped
MAX_BATCH = 2_000  # observations per tracker call
LOG_EVERY_S = 30.0  # at most one warning per this many seconds while the tracker fails
# Waits before retrying a retriable failure (Redis blip, the cluster codebook locked by
# another worker): short, since observations queue up meanwhile.
RETRY_DELAYS_S = (0.05, 0.2, 0.5)


def observations_from_rows(rows: Sequence[IndexRow]) -> list[Observation]:
    """One observation per post of ``rows`` (accepted index rows), in first-seen order.

    The post's vector is its text row's (item 0); a post with no text row in the batch
    takes its first whole media item (lowest item number, not a video moment). Rows of
    one post normally arrive in one batch (they share a key, hence a partition, and are
    produced together); a post split over two batches is observed twice, which the
    tracker counts once.
    """
    best: dict[str, IndexRow] = {}  # the row that stands for the post
    media: dict[str, IndexRow] = {}  # its first media item, for samples
    for row in rows:
        if row.moment is not None or len(row.vector) == 0:
            continue
        held = best.get(row.post_id)
        if held is None or row.item < held.item:
            best[row.post_id] = row
        first = media.get(row.post_id)
        if row.item > 0 and row.media_ref and (first is None or row.item < first.item):
            media[row.post_id] = row
    out: list[Observation] = []
    for post_id, row in best.items():
        first = media.get(post_id)
        out.append(
            Observation(
                post_id=post_id,
                author=row.author,
                created_at=row.created_at_ms / 1000.0,
                hashtags=tuple(dict.fromkeys(row.tags)),
                vector=_as_array(row.vector),
                text=row.text,
                media_ref=None if first is None else first.media_ref,
            )
        )
    return out


def repost_observation(clean: CleanPost) -> Observation:
    """A repost as attention for its original (no vector: reposts are not embedded)."""
    post = clean.post
    first = post.media[0] if post.media else None
    return Observation(
        post_id=post.id,
        author=post.author,
        created_at=post.created_at.timestamp(),
        hashtags=tuple(dict.fromkeys(clean.hashtags)),
        duplicate_of=clean.duplicate_of,
        text=clean.clean_text,
        media_ref=None if first is None else (first.url or first.path),
    )


def _as_array(vector: Sequence[float]) -> np.ndarray:
    return np.asarray(vector, dtype=np.float32)


class TrendsStep:
    """Feeds a tracker from a worker's stages without ever blocking them.

    ``tracker``: the tracker, or a factory called on first use in the step's thread (so
    a worker starts even while Redis does not answer). :meth:`submit` never blocks and
    never raises; :meth:`flush` waits until everything submitted so far was handed over
    (tests, shutdown).
    """

    def __init__(
        self,
        tracker: TrendTracker | Callable[[], TrendTracker],
        metrics: WorkerMetrics,
        *,
        max_queued: int = MAX_QUEUED,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._tracker = tracker if isinstance(tracker, TrendTracker) else None
        self._factory = None if isinstance(tracker, TrendTracker) else tracker
        self._owns_tracker = self._factory is not None
        self._metrics = metrics
        self._queue: queue.Queue[Observation | None] = queue.Queue(max_queued)
        self._max_batch = max(1, max_batch)
        self._idle = threading.Condition()
        self._unfinished = 0
        self._last_warning = 0.0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="crossfeed-trends", daemon=True)
        self._thread.start()

    def submit(self, observations: Sequence[Observation]) -> int:
        """Queue ``observations``; returns how many were dropped (queue full or closed)."""
        dropped = 0
        for obs in observations:
            if self._closed:
                dropped += 1
                continue
            with self._idle:
                self._unfinished += 1
            try:
                self._queue.put_nowait(obs)
            except queue.Full:
                with self._idle:
                    self._unfinished -= 1
                    self._idle.notify_all()
                dropped += 1
        if dropped:
            self._metrics.trends_dropped.inc(dropped)
        return dropped

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every observation submitted so far was handed to the tracker (or
        failed); False when ``timeout_s`` passed first."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._unfinished > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Hand over what is queued (up to ``timeout_s``), stop the thread, close the tracker
        if this step opened it."""
        if self._closed:
            return
        self.flush(timeout_s)
        self._closed = True
        # A full queue: the thread is stuck on the tracker; it is a daemon, leave it.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(timeout_s)
        if self._owns_tracker and self._tracker is not None:
            try:
                self._tracker.close()
            except Exception as exc:  # closing must not fail a worker's shutdown
                log.warning("closing the trend tracker failed: %s", exc)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            self._observe(batch)
            with self._idle:
                self._unfinished -= len(batch)
                self._idle.notify_all()
            if stop:
                return

    def _observe(self, batch: list[Observation]) -> None:
        started = time.perf_counter()
        try:
            self._observe_with_retries(batch)
        except Exception as exc:  # never let trends stop the stream: count, log, go on
            self._metrics.trends_errors.inc()
            self._metrics.trends_lost.inc(len(batch))
            now = time.monotonic()
            if now - self._last_warning >= LOG_EVERY_S:
                self._last_warning = now
                log.warning(
                    "trends step: %d observation(s) not counted: %s: %s",
                    len(batch),
                    type(exc).__name__,
                    exc,
                )
            return
        finally:
            self._metrics.trends_batch_seconds.observe(time.perf_counter() - started)
        self._metrics.trends_observed.inc(len(batch))

    def _observe_with_retries(self, batch: list[Observation]) -> None:
        for delay in (*RETRY_DELAYS_S, None):
            try:
                if self._tracker is None:
                    assert self._factory is not None
                    self._tracker = self._factory()
                self._tracker.observe(batch)
                return
            except CrossfeedError as exc:
                if not exc.retriable or delay is None or self._closed:
                    raise
                time.sleep(delay)


def default_trends_step(settings: Settings, metrics: WorkerMetrics) -> TrendsStep | None:
    """The step on the configured Redis, or None when ``CROSSFEED_TRENDS=0``."""
    if not settings.trends.enabled:
        return None
    return TrendsStep(lambda: open_tracker(settings), metrics)


def open_tracker(settings: Settings) -> TrendTracker:
    """The deployment's tracker: state in Redis (``<key prefix>:trends``), shared by every
    worker and API process and kept across worker restarts."""
    import redis

    from crossfeed.trends.tracker import open_tracker as open_store_tracker

    client = redis.Redis.from_url(
        settings.redis.url.get_secret_value(), socket_timeout=5.0, socket_connect_timeout=2.0
    )
    return open_store_tracker(settings, client)
