"""Answers the crossfeed API does not give today but a deployment may (an API key in
front, rate limits, a slow or foreign service): the client maps each to its error."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from crossfeed.client import (
    Client,
    ProtocolError,
    RateLimitedError,
    RequestTimeoutError,
    RetryPolicy,
    UnauthorizedError,
)

KEY = "k-123"


class Gateway:
    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.app = Starlette(
            routes=[
                Route("/healthz", self.health),
                Route("/v1/posts/{post_id:path}", self.limited),
                Route("/v1/search", self.slow, methods=["POST"]),
                Route("/readyz", self.html),
            ]
        )

    def _count(self, request: Request) -> None:
        self.calls[request.url.path] = self.calls.get(request.url.path, 0) + 1

    async def health(self, request: Request) -> Response:
        self._count(request)
        if request.headers.get("x-api-key") != KEY:
            body = {"error": {"type": "Unauthorized", "message": "an API key is required"}}
            return JSONResponse(body, status_code=401)
        return JSONResponse({"status": "ok"})

    async def limited(self, request: Request) -> Response:
        self._count(request)
        body = {"error": {"type": "RateLimited", "message": "slow down", "retriable": True}}
        return JSONResponse(body, status_code=429, headers={"Retry-After": "7"})

    async def slow(self, request: Request) -> Response:
        self._count(request)
        await asyncio.sleep(2)
        return JSONResponse({})

    async def html(self, request: Request) -> Response:
        return HTMLResponse("<html>a login page</html>")


@pytest.fixture
def gateway(serve: Callable[..., str]) -> tuple[Gateway, str]:
    gw = Gateway()
    return gw, serve(gw.app)


FAST = RetryPolicy(attempts=3, wait_initial_s=0.01, wait_jitter_s=0.0)


def test_api_key_header(gateway: tuple[Gateway, str], monkeypatch: pytest.MonkeyPatch) -> None:
    gw, url = gateway
    monkeypatch.delenv("CROSSFEED_API_KEY", raising=False)
    with Client(url, retry=FAST) as client, pytest.raises(UnauthorizedError) as err:
        client.health()
    assert err.value.status == 401 and "API key" in err.value.message
    assert gw.calls["/healthz"] == 1  # a 4xx is never retried
    with Client(url, api_key=KEY) as client:
        assert client.health()
    monkeypatch.setenv("CROSSFEED_API_KEY", KEY)
    with Client(url) as client:
        assert client.health()


def test_rate_limit_is_raised_with_retry_after_not_retried(gateway: tuple[Gateway, str]) -> None:
    gw, url = gateway
    with Client(url, retry=FAST) as client, pytest.raises(RateLimitedError) as err:
        client.get_post("p1")
    assert err.value.retry_after == 7.0 and err.value.retriable
    assert gw.calls["/v1/posts/p1"] == 1


def test_read_timeout_is_raised_not_retried(gateway: tuple[Gateway, str]) -> None:
    gw, url = gateway
    with Client(url, timeout=0.3, retry=FAST) as client, pytest.raises(RequestTimeoutError):
        client.search("cats")
    assert gw.calls["/v1/search"] == 1


def test_an_answer_of_another_shape_is_a_protocol_error(gateway: tuple[Gateway, str]) -> None:
    _, url = gateway
    with Client(url) as client, pytest.raises(ProtocolError, match="ReadyResponse"):
        client.ready()


def test_codegen_is_up_to_date() -> None:
    """The sync client is generated from the async one; this fails when it was not re-run."""
    from crossfeed.client.codegen import main

    assert main(["--check"]) == 0, "run: python -m crossfeed.client.codegen"


def test_importing_the_client_loads_no_server_or_model_code() -> None:
    import subprocess
    import sys

    code = (
        "import sys, crossfeed.client; "
        "heavy = {'fastapi', 'starlette', 'torch', 'numpy', 'pymilvus', 'faust', 'kafka'}; "
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
