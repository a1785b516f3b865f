"""What live monitoring stores and the seams between its writers and readers.

A :class:`Subscription` is a standing query: a unit query vector of one model
version, a score threshold and a search filter. The API writes subscriptions and
reads their events (:class:`SubscriptionStore`, asyncio); the index stage reads
the active ones and records matches (:class:`SubscriptionFeed` and
:class:`MatchSink`, blocking, called from its worker thread). Redis implements
them all (:mod:`crossfeed.live.redis_store`); :mod:`crossfeed.live.memory` keeps
them in process for unit tests.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crossfeed.indexer.base import SearchFilter
from crossfeed.live.exceptions import InvalidEventIdError

# A Redis Stream id: "<ms>-<seq>"; "0" means "from the start of retention".
_EVENT_ID = re.compile(r"0|\d{1,20}-\d{1,20}")


def check_event_id(value: str) -> str:
    """``value`` when it is a stream id (``1718000000000-0``) or ``0``; else 422-class error."""
    if not _EVENT_ID.fullmatch(value):
        raise InvalidEventIdError(
            f"event id {value[:64]!r} is not a stream id like '1718000000000-0' (or '0')"
        )
    return value


@dataclass(frozen=True)
class Subscription:
    """A standing query; ``vector`` is unit length, in ``model_version``'s space."""

    id: str
    name: str
    kind: str  # "text" | "image" | "post": what the query was made from
    query: str  # the text, the post id, or the image's sha256 (display only)
    min_score: float  # cosine similarity a new row needs to match
    filter: SearchFilter  # model_version set; exclude_post_ids for a post query
    filters: dict[str, Any]  # the filters as the client gave them (display only)
    vector: np.ndarray
    model_version: str
    created_at_ms: int


@dataclass(frozen=True)
class Match:
    """One new post that matched one subscription (its best row in the batch)."""

    sub_id: str
    post_id: str
    score: float
    data: dict[str, Any]  # the event payload (JSON-able)


@dataclass(frozen=True)
class MatchEvent:
    """A recorded match as read back: the stream id (the SSE event id) and its payload."""

    id: str
    data: dict[str, Any]


@dataclass
class SubscriptionPage:
    items: list[Subscription] = field(default_factory=list)
    total: int = 0


class SubscriptionStore(ABC):
    """The API's side: create, look up, delete subscriptions; read their events."""

    @abstractmethod
    async def create(self, sub: Subscription, *, limit: int) -> None:
        """Store ``sub``; :class:`SubscriptionLimitError` when ``limit`` are active already."""

    @abstractmethod
    async def get(self, sub_id: str) -> Subscription | None: ...

    @abstractmethod
    async def page(self, *, limit: int, offset: int = 0) -> SubscriptionPage:
        """Subscriptions ordered by creation time, newest first."""

    @abstractmethod
    async def delete(self, sub_id: str) -> bool:
        """Remove the subscription, its events and dedupe marks; False when unknown."""

    @abstractmethod
    async def count(self) -> int: ...

    @abstractmethod
    async def read_events(
        self, sub_id: str, after: str, *, count: int, block_s: float
    ) -> list[MatchEvent]:
        """Up to ``count`` events with ids above ``after`` (``"0"``: from the oldest kept),
        waiting up to ``block_s`` seconds for one when there is none yet."""

    @abstractmethod
    async def last_event_id(self, sub_id: str) -> str | None:
        """The id of the newest event kept, None when there is none."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class SubscriptionFeed(ABC):
    """The index stage's side: the active subscriptions, and where matches go."""

    @abstractmethod
    def version(self) -> int:
        """A counter that changes whenever a subscription is created or deleted."""

    @abstractmethod
    def load(self) -> list[Subscription]:
        """Every stored subscription."""

    @abstractmethod
    def record(self, matches: Sequence[Match]) -> int:
        """Append matches to their subscriptions' events, at most once per (subscription,
        post) within the dedupe window; matches of deleted subscriptions are dropped.
        Returns how many were new."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
