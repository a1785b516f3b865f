"""Subscriptions and events in process memory, for unit tests and single-process demos.

One object is both the API's :class:`SubscriptionStore` and the index stage's
:class:`SubscriptionFeed`, with the Redis store's semantics: events get increasing
stream-like ids, a (subscription, post) match is recorded once, streams are trimmed
to ``events_maxlen``. Thread-safe (the index stage records from its worker thread).
"""

from __future__ import annotations

import asyncio
import bisect
import threading
import time
from collections.abc import Sequence

from crossfeed.live.base import (
    Match,
    MatchEvent,
    Subscription,
    SubscriptionFeed,
    SubscriptionPage,
    SubscriptionStore,
)
from crossfeed.live.exceptions import SubscriptionLimitError


def _id_key(event_id: str) -> tuple[int, int]:
    if event_id == "0":
        return (0, 0)
    ms, seq = event_id.split("-")
    return (int(ms), int(seq))


class MemorySubscriptions(SubscriptionStore, SubscriptionFeed):
    def __init__(self, *, events_maxlen: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, Subscription] = {}
        self._events: dict[str, list[MatchEvent]] = {}
        self._seen: set[tuple[str, str]] = set()
        self._version = 0
        self._last = (0, 0)
        self._maxlen = events_maxlen
        self.available = True  # tests flip this to simulate an outage

    # ------------------------------------------------------------------ API side

    async def create(self, sub: Subscription, *, limit: int) -> None:
        with self._lock:
            if len(self._subs) >= limit:
                raise SubscriptionLimitError(f"{len(self._subs)} subscriptions, limit {limit}")
            self._subs[sub.id] = sub
            self._version += 1

    async def get(self, sub_id: str) -> Subscription | None:
        return self._subs.get(sub_id)

    async def page(self, *, limit: int, offset: int = 0) -> SubscriptionPage:
        with self._lock:
            items = sorted(self._subs.values(), key=lambda s: (-s.created_at_ms, s.id))
        return SubscriptionPage(items[offset : offset + limit], len(items))

    async def delete(self, sub_id: str) -> bool:
        with self._lock:
            found = self._subs.pop(sub_id, None) is not None
            self._events.pop(sub_id, None)
            self._seen = {s for s in self._seen if s[0] != sub_id}
            self._version += 1
        return found

    async def count(self) -> int:
        return len(self._subs)

    async def read_events(
        self, sub_id: str, after: str, *, count: int, block_s: float
    ) -> list[MatchEvent]:
        deadline = time.monotonic() + max(0.0, block_s)
        floor = _id_key(after)
        while True:
            with self._lock:
                events = self._events.get(sub_id, [])
                start = bisect.bisect_right([_id_key(e.id) for e in events], floor)
                found = events[start : start + count]
            if found or time.monotonic() >= deadline:
                return found[:count]
            await asyncio.sleep(0.01)

    async def last_event_id(self, sub_id: str) -> str | None:
        events = self._events.get(sub_id)
        return events[-1].id if events else None

    # ------------------------------------------------------------------ stream side

    def version(self) -> int:
        return self._version

    def load(self) -> list[Subscription]:
        with self._lock:
            return list(self._subs.values())

    def _next_id(self) -> str:
        now = (int(time.time() * 1000), 0)
        self._last = now if now > self._last else (self._last[0], self._last[1] + 1)
        return f"{self._last[0]}-{self._last[1]}"

    def record(self, matches: Sequence[Match]) -> int:
        new = 0
        with self._lock:
            for m in matches:
                if m.sub_id not in self._subs or (m.sub_id, m.post_id) in self._seen:
                    continue
                self._seen.add((m.sub_id, m.post_id))
                events = self._events.setdefault(m.sub_id, [])
                events.append(MatchEvent(self._next_id(), dict(m.data)))
                del events[: max(0, len(events) - self._maxlen)]
                new += 1
        return new
