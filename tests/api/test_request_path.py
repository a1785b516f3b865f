"""The request path stays on the event loop: no dependency runs in a worker thread, and
requests are counted by plain ASGI middleware (per route template and status)."""

from __future__ import annotations

import inspect

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from crossfeed.api.app import create_app
from crossfeed.core.settings import Settings


def _sync_dependencies(dependant, seen: set[int]) -> list[str]:  # type: ignore[no-untyped-def]
    found = []
    for dep in dependant.dependencies:
        call = dep.call
        if call is not None and id(call) not in seen:
            seen.add(id(call))
            if not (inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call)):
                found.append(getattr(call, "__qualname__", repr(call)))
        found += _sync_dependencies(dep, seen)
    return found


def _routes(routes):  # type: ignore[no-untyped-def]
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        inner = getattr(getattr(route, "original_router", None), "routes", None)
        if inner:
            yield from _routes(inner)


def test_no_route_dependency_is_a_plain_function() -> None:
    """FastAPI runs a plain ``def`` dependency in the thread pool: one thread hop per
    dependency per request (five on a search; 42% of a cached search's CPU time)."""
    app = create_app(Settings())
    routes = list(_routes(app.router.routes))
    assert any(r.path == "/v1/search" for r in routes)
    sync = sorted({name for r in routes for name in _sync_dependencies(r.dependant, set())})
    assert sync == [], f"dependencies that run in the thread pool: {sync}"


def test_requests_are_counted_per_route_and_status(client: TestClient) -> None:
    client.post("/v1/search", json={"text": "cats"})
    client.get("/v1/posts/missing")
    client.get("/no/such/path")
    text = client.get("/metrics").text
    assert 'crossfeed_http_requests_total{route="/v1/search",status="200"} 1.0' in text
    assert (
        'crossfeed_http_requests_total{route="/v1/posts/{post_id:path}",status="404"} 1.0' in text
    )
    assert 'crossfeed_http_requests_total{route="unmatched",status="404"} 1.0' in text
