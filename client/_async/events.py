"""Server-sent event streams that survive dropped connections.

:func:`iter_events` opens ``GET path`` as an event stream (retrying connection errors
and 503 like every request), yields each event, and when the connection drops (the
server closed it, a read error, no byte for ``event_read_timeout_s``) opens it again
with ``Last-Event-ID`` set to the last id seen, after the delay the server asked for
(its ``retry:`` field) or a short back-off. Blocks without data (a lone ``retry:``)
update the fields but are not events; comments (heartbeats) are skipped. A 204 ends
the stream for good (the SSE rule); a 4xx is raised. ``max_reconnects`` bounds the
reconnections in a row that bring no event (a server that accepts and hangs up at
once); any event resets the count.

Generated into ``_sync/events.py`` for the sync client; edit this file, then run
``python -m crossfeed.client.codegen``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping

import httpx
import stamina
from httpx_sse import EventSource, SSEError

from crossfeed.client._async._io import sleep
from crossfeed.client._core import (
    STREAM_DROPS,
    ClientConfig,
    ServerEvent,
    check_event_response,
    event_request,
    retry_on,
    transport_error,
)
from crossfeed.client.exceptions import ConnectionFailedError, ProtocolError

log = logging.getLogger("crossfeed.client")


async def _open(
    http: httpx.AsyncClient,
    config: ClientConfig,
    path: str,
    params: Mapping[str, str] | None,
    last_event_id: str | None,
) -> httpx.Response | None:
    """An open event-stream response, or None when the server answered 204."""
    request, headers = event_request(path, params, last_event_id)
    timeout = httpx.Timeout(
        config.timeout.connect, read=config.event_read_timeout_s, write=config.timeout.write
    )
    try:
        async for attempt in stamina.retry_context(
            on=retry_on(config.retry, idempotent=True), **config.retry.stamina_kwargs()
        ):
            with attempt:
                built = http.build_request(
                    **request.httpx_kwargs(), headers=headers, timeout=timeout
                )
                response = await http.send(built, stream=True)
                try:
                    body = b"" if response.is_success else await response.aread()
                    if check_event_response(response, body):
                        return response
                except BaseException:
                    await response.aclose()
                    raise
                await response.aclose()
                return None
    except httpx.TransportError as exc:
        raise transport_error(exc, config.url) from exc
    raise AssertionError("unreachable")  # stamina either returned or raised


async def iter_events(
    http: httpx.AsyncClient,
    config: ClientConfig,
    path: str,
    *,
    params: Mapping[str, str] | None = None,
    last_event_id: str | None = None,
    max_reconnects: int | None = 10,
) -> AsyncIterator[ServerEvent]:
    """Every event of the stream at ``path``, across reconnections (see the module doc)."""
    last_id = last_event_id
    server_retry_s: float | None = None
    quiet = 0  # connections in a row that ended without an event
    while True:
        response = await _open(http, config, path, params, last_id)
        if response is None:
            return
        received = 0
        try:
            async for sse in EventSource(response).aiter_sse():
                if sse.retry is not None:
                    server_retry_s = sse.retry / 1000
                if sse.id:
                    last_id = sse.id
                if not sse.data:
                    continue  # a block without data is no event (SSE), only its fields count
                received += 1
                yield ServerEvent(event=sse.event, data=sse.data, id=last_id, retry_ms=sse.retry)
        except STREAM_DROPS as exc:
            log.info("event stream %s dropped (%s); resuming after event %s", path, exc, last_id)
        except SSEError as exc:
            raise ProtocolError(f"event stream {path}: {exc}") from exc
        finally:
            await response.aclose()
        quiet = 0 if received else quiet + 1
        if max_reconnects is not None and quiet > max_reconnects:
            raise ConnectionFailedError(
                f"event stream {path} closed {quiet} times in a row without an event"
            )
        policy = config.retry
        backoff = min(policy.wait_max_s, policy.wait_initial_s * (2 ** max(0, quiet - 1)))
        await sleep(server_retry_s if server_retry_s is not None else backoff)
