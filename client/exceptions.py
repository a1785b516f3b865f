"""Errors the client raises, one tree under :class:`ClientError` (a ``CrossfeedError``).

The API answers every error as ``{"error": {"type", "message", "retriable", "details"}}``;
:func:`crossfeed.client._core.error_from_response` turns that into one of these,
by status (and, for a 409, by the error's type):

=========  ==========================================================
status     exception
=========  ==========================================================
400, 413,  :class:`BadRequestError` (the request is wrong; never retried)
415, 422   (:class:`InvalidCursorError` for a cursor from another query)
401, 403   :class:`UnauthorizedError` (403: :class:`ForbiddenError`, the key lacks a scope)
404        :class:`NotFoundError`
409        :class:`ConflictError` (:class:`StaleCursorError`: the index changed
           under a cursor; start paging again)
429        :class:`RateLimitedError` (never retried: it is a 4xx; ``retry_after``)
503        :class:`UnavailableError` (retried with back-off, honouring Retry-After)
other 5xx  :class:`ServerError`
=========  ==========================================================

Without an answer: :class:`ConnectionFailedError` (retried first) and
:class:`RequestTimeoutError`. An answer that is not what the API documents is a
:class:`ProtocolError`; a bad argument is a :class:`ClientInputError`.
"""

from __future__ import annotations

from typing import Any

from crossfeed.exceptions import CrossfeedError, InvalidInputError


class ClientError(CrossfeedError):
    """Base class of every error the client raises."""


class ClientInputError(ClientError, InvalidInputError):
    """An argument is invalid (nothing was sent): an image that is not there, two queries."""


class ConnectionFailedError(ClientError):
    """The API could not be reached (after the retries)."""

    retriable = True


class RequestTimeoutError(ClientError):
    """The API did not answer within the timeout."""

    retriable = True


class ProtocolError(ClientError):
    """The answer is not what the API documents (another service on that address?)."""


class ApiResponseError(ClientError):
    """The API answered with an error status; ``status``, ``type`` and ``details`` say more."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        type: str = "",
        details: list[Any] | None = None,
        retriable: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, retriable=retriable)
        self.status = status
        self.type = type
        self.details = details
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.status} {self.type or 'error'}: {self.message}"


class BadRequestError(ApiResponseError, InvalidInputError):
    """The API refused the request as invalid (400, 413, 415, 422)."""


class InvalidCursorError(BadRequestError):
    """A cursor that was altered, or sent with another query than the one it came from."""


class UnauthorizedError(ApiResponseError):
    """The API wants an API key, or another one (401, 403)."""


class ForbiddenError(UnauthorizedError):
    """The API key is valid but lacks the scope this call needs (403)."""


class NotFoundError(ApiResponseError, LookupError):
    """The post (or another resource) does not exist (404)."""


class ConflictError(ApiResponseError):
    """The request conflicts with the server's state (409)."""


class StaleCursorError(ConflictError):
    """The index changed since the cursor was issued: search again from the first page."""


class RateLimitedError(ApiResponseError):
    """Too many requests (429); wait ``retry_after`` seconds when given."""

    retriable = True


class UnavailableError(ApiResponseError):
    """A backend of the API is unavailable (503); retried by the client with back-off."""

    retriable = True


class ServerError(ApiResponseError):
    """The API failed (500 and other 5xx)."""
