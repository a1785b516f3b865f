"""Errors of the live-monitoring package (subscriptions, their events, freshness)."""

from __future__ import annotations

from crossfeed.exceptions import CrossfeedError, InvalidInputError


class LiveError(CrossfeedError):
    """Base class of every live-monitoring error."""


class LiveUnavailableError(LiveError):
    """Redis (where subscriptions, events and freshness live) did not answer: retry later."""

    retriable = True


class SubscriptionNotFoundError(LiveError):
    """No subscription has this id (never created, or deleted)."""


class SubscriptionLimitError(LiveError):
    """Creating one more subscription would pass ``CROSSFEED_MAX_SUBSCRIPTIONS``."""


class InvalidEventIdError(LiveError, InvalidInputError):
    """A ``Last-Event-ID`` (or ``after``) that is not a stream id like ``1718000000000-0``."""
