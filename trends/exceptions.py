"""Errors of the trends package."""

from __future__ import annotations

from crossfeed.exceptions import CrossfeedError, InvalidInputError


class TrendError(CrossfeedError):
    """Base class of every trends error."""


class TrendsUnavailableError(TrendError):
    """The trend state (Redis) did not answer: retry later."""

    retriable = True


class TrendNotFoundError(TrendError):
    """No current or recent trend has this id."""


class InvalidTrendQueryError(TrendError, InvalidInputError):
    """A trends query with a bad window, kind or limit."""
