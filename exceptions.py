"""Root of crossfeed's error tree.

Every package has its own ``exceptions.py`` whose classes derive from
:class:`CrossfeedError`. ``retriable`` tells a caller whether the same call may
succeed later (an engine was unreachable) or never will (bad input).
"""

from __future__ import annotations


class CrossfeedError(Exception):
    """Base class of every error crossfeed raises on purpose."""

    retriable: bool = False

    def __init__(self, message: str, *, retriable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retriable is not None:
            self.retriable = retriable

    def __str__(self) -> str:
        return self.message


class ConfigError(CrossfeedError):
    """A setting is missing or invalid."""


class InvalidInputError(CrossfeedError):
    """External input (a post, a URL, a filter, a file) failed validation."""


def is_retriable(exc: BaseException) -> bool:
    """Whether trying the same call again may succeed: a retriable :class:`CrossfeedError`,
    or a connection error or timeout from below crossfeed."""
    if isinstance(exc, CrossfeedError):
        return exc.retriable
    return isinstance(exc, ConnectionError | TimeoutError)


class CircuitOpenError(CrossfeedError):
    """An engine failed recently and its circuit breaker is open: the call was not even
    tried (:mod:`crossfeed.core.breaker`). Retriable: the breaker lets a trial call
    through once its interval has passed."""

    retriable = True
