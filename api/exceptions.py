"""Errors the HTTP layer raises on purpose, each with the status it answers with.

Errors from other packages are mapped in :mod:`crossfeed.api.errors`: bad input
(``InvalidInputError``) becomes 422, a retriable engine failure 503.
"""

from __future__ import annotations

from typing import Any

from crossfeed.exceptions import CrossfeedError, InvalidInputError


class ApiError(CrossfeedError):
    """Base class; ``status_code`` is the HTTP status of the answer.

    ``details`` carries field-level problems (pydantic's error list) to the client.
    """

    status_code: int = 500

    def __init__(self, message: str, *, details: list[Any] | None = None) -> None:
        super().__init__(message)
        self.details = details
        self.headers: dict[str, str] = {}


class BadRequestError(ApiError, InvalidInputError):
    """The request is malformed or violates a documented limit."""

    status_code = 422


class NotFoundError(ApiError):
    status_code = 404


class PayloadTooLargeError(ApiError, InvalidInputError):
    status_code = 413


class UnsupportedMediaTypeError(ApiError, InvalidInputError):
    status_code = 415


class ConflictError(ApiError):
    """The request conflicts with the current state (e.g. a limit on stored objects)."""

    status_code = 409


class ModelVersionConflictError(ApiError):
    """A post's stored vectors come from another model version than the one serving."""

    status_code = 409


class UnauthorizedError(ApiError):
    """No API key, or one that is not valid."""

    status_code = 401

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.headers = {"WWW-Authenticate": 'Bearer realm="crossfeed"'}


class ForbiddenError(ApiError):
    """A valid key without the scope the route needs."""

    status_code = 403


class RateLimitedError(ApiError):
    """The key's rate limit is spent for now."""

    status_code = 429

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(int(retry_after_s))}


class InvalidCursorError(BadRequestError):
    """A search cursor that was altered, malformed, or sent with another query."""


class StaleCursorError(ApiError):
    """A search cursor from an older index epoch: the pages would no longer line up."""

    status_code = 409
