"""Exception handlers: every error answers ``{"error": {type, message, retriable, details}}``.

Mapping: :class:`ApiError` subclasses carry their status; other bad input
(``InvalidInputError``: bad filters, undecodable images) is 422; a retriable
engine failure is 503 with ``Retry-After``; anything else is a 500 whose message
is generic (the details go to the log, not to the client).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from crossfeed.api.exceptions import (
    ApiError,
    ConflictError,
    ModelVersionConflictError,
    NotFoundError,
)
from crossfeed.exceptions import CrossfeedError, InvalidInputError
from crossfeed.live.exceptions import SubscriptionLimitError, SubscriptionNotFoundError
from crossfeed.retrieval.exceptions import ModelVersionMismatchError, PostNotIndexedError

log = logging.getLogger(__name__)

RETRY_AFTER_S = 2


def _without_inputs(details: Any) -> Any:
    """Field errors without the offending values: an echoed input can be huge, can hold
    what the client should not see again in logs, and may not even be JSON (NaN)."""
    if isinstance(details, list):
        return [
            {k: v for k, v in d.items() if k not in ("input", "ctx", "url")}
            if isinstance(d, dict)
            else d
            for d in details
        ]
    return details


def _body(
    kind: str, message: str, *, retriable: bool = False, details: Any = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"type": kind, "message": message, "retriable": retriable}
    if details:
        error["details"] = jsonable_encoder(_without_inputs(details))
    return {"error": error}


# Errors of the floors below, answered as the API's own (status and type name).
_AS_API_ERROR: dict[type[CrossfeedError], type[ApiError]] = {
    PostNotIndexedError: NotFoundError,
    ModelVersionMismatchError: ModelVersionConflictError,
    SubscriptionNotFoundError: NotFoundError,
    SubscriptionLimitError: ConflictError,
}


async def _crossfeed_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CrossfeedError)
    for source, target in _AS_API_ERROR.items():
        if isinstance(exc, source):
            exc = target(exc.message)
            break
    kind = type(exc).__name__
    if isinstance(exc, ApiError):
        return JSONResponse(
            _body(kind, exc.message, details=exc.details),
            status_code=exc.status_code,
            headers=exc.headers or None,
        )
    if isinstance(exc, InvalidInputError):
        return JSONResponse(_body(kind, exc.message), status_code=422)
    if exc.retriable:
        log.warning("%s %s: engine unavailable: %s", request.method, request.url.path, exc)
        return JSONResponse(
            _body(kind, "a backend is unavailable; retry shortly", retriable=True),
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    log.error("%s %s failed: %s", request.method, request.url.path, exc)
    return JSONResponse(_body(kind, "internal error"), status_code=500)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        # Starlette names only the first route that matched the path; a resource served by
        # several routes (GET and POST /v1/subscriptions) allows all of their methods.
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return JSONResponse(
        _body("HTTPError", str(exc.detail)),
        status_code=exc.status_code,
        headers=headers or None,
    )


def _allowed_methods(request: Request) -> list[str]:
    """The methods some route serves at this path. Asked per method: routes of included
    routers (FastAPI wraps them) answer FULL only for a method they serve."""
    from starlette.routing import Match

    methods: set[str] = set()
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.routes):
            methods.add(method)
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(
        _body("BadRequestError", "invalid request", details=exc.errors()), status_code=422
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s crashed", request.method, request.url.path)
    return JSONResponse(_body("InternalError", "internal error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(CrossfeedError, _crossfeed_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
