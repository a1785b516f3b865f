"""Standing queries: ``/v1/subscriptions`` and their Server-Sent Events.

``POST /v1/subscriptions`` takes a text or a post id (JSON) or an image (multipart, with
``min_score``, ``filters`` and ``name`` as form fields), embeds it once with the serving
model and stores the query vector; the index stage matches every new row against it
(:mod:`crossfeed.live.percolator`) and records matches in a Redis Stream.

``GET /v1/subscriptions/{id}/events`` streams them as SSE: each event's ``id`` is its
stream id and its data the match (``post_id``, ``score``, ...). A client reconnecting
with ``Last-Event-ID`` (or ``?after=``) gets exactly the events after that one that are
still kept (``CROSSFEED_EVENTS_MAXLEN`` per subscription); without one, every kept
event. Idle streams carry a comment line every ``CROSSFEED_SSE_HEARTBEAT_S``. Events
are read from Redis in bounded chunks only as the client takes them (the SSE response
holds one event at a time), so a client that stops reading costs no growing memory.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
import numpy as np
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import ValidationError

from crossfeed.api.deps import (
    EncoderDep,
    IndexDep,
    LiveDep,
    SettingsDep,
    StateDep,
    search_context,
)
from crossfeed.api.exceptions import BadRequestError, NotFoundError, UnsupportedMediaTypeError
from crossfeed.api.live import LiveServices
from crossfeed.api.live_models import (
    SubscriptionCreate,
    SubscriptionList,
    SubscriptionOptions,
    SubscriptionOut,
    SubscriptionQuery,
)
from crossfeed.api.models import ERRORS, SearchFilters, json_errors
from crossfeed.api.search import Query as SearchQuery
from crossfeed.api.search import query_vector, thumbnail_url
from crossfeed.api.upload import read_json, read_upload_form
from crossfeed.core.schema import MAX_TEXT_CHARS
from crossfeed.live.base import Subscription, check_event_id
from crossfeed.live.exceptions import LiveUnavailableError

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["subscriptions"])

MAX_JSON_BYTES = 4 * MAX_TEXT_CHARS + 64 * 1024
EVENTS_PER_READ = 100  # events taken from Redis per read: the most a stream ever holds
_ID_CHARS = frozenset("0123456789abcdef")


def _out(sub: Subscription, serving: str, last_event_id: str | None = None) -> SubscriptionOut:
    query = SubscriptionQuery(kind=sub.kind)  # type: ignore[arg-type]
    if sub.kind == "text":
        query.text = sub.query
    elif sub.kind == "post":
        query.post_id = sub.query
    else:
        query.image_sha256 = sub.query
    return SubscriptionOut(
        id=sub.id,
        name=sub.name,
        query=query,
        min_score=sub.min_score,
        filters=sub.filters,
        model_version=sub.model_version,
        active=sub.model_version == serving,
        created_at=datetime.fromtimestamp(sub.created_at_ms / 1000, tz=UTC),
        events_url=f"/v1/subscriptions/{sub.id}/events",
        last_event_id=last_event_id,
    )


def _bad(exc: ValidationError, what: str) -> BadRequestError:
    return BadRequestError(
        f"invalid {what}", details=exc.errors(include_url=False, include_context=False)
    )


async def _parse(
    request: Request, max_upload_bytes: int
) -> tuple[SearchQuery, SubscriptionOptions]:
    """The query to embed and the validated body, from JSON or multipart."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        payload = await read_json(request, MAX_JSON_BYTES)
        try:
            body = SubscriptionCreate.model_validate(payload)
        except ValidationError as exc:
            raise _bad(exc, "subscription") from exc
        if body.text is not None:
            return SearchQuery.for_text(body.text, 1, body.filters), body
        return SearchQuery(kind="post", top_k=1, filters=body.filters, post_id=body.post_id), body
    if content_type == "multipart/form-data":
        data, fields = await read_upload_form(
            request,
            max_file_bytes=max_upload_bytes,
            allowed_fields=frozenset({"filters", "min_score", "name"}),
        )
        try:
            filters = SearchFilters.model_validate_json(fields.get("filters") or "{}")
        except ValidationError as exc:
            raise _bad(exc, "filters") from exc
        raw_score = fields.get("min_score")
        if raw_score is None:
            raise BadRequestError("min_score is required")
        try:
            options = SubscriptionOptions.model_validate(
                {"min_score": raw_score, "filters": filters, "name": fields.get("name")}
            )
        except ValidationError as exc:
            raise _bad(exc, "subscription") from exc
        return SearchQuery(kind="image", top_k=1, filters=filters, image=data), options
    raise UnsupportedMediaTypeError(
        "send application/json ({'text': ...} or {'post_id': ...} with 'min_score') "
        "or multipart/form-data with an image in 'file' and a 'min_score' field"
    )


def _describe(query: SearchQuery) -> str:
    if query.kind == "text":
        assert query.text is not None
        return query.text
    if query.kind == "post":
        assert query.post_id is not None
        return query.post_id
    assert query.image is not None
    return hashlib.sha256(query.image).hexdigest()


_CREATE_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/SubscriptionCreate"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "min_score"],
                    "additionalProperties": False,
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "min_score": {"type": "number", "minimum": -1.0, "maximum": 1.0},
                        "filters": {
                            "type": "string",
                            "description": "JSON object, see SearchFilters",
                        },
                        "name": {"type": "string", "minLength": 1, "maxLength": 100},
                    },
                }
            },
        },
    }
}


@router.post(
    "/subscriptions",
    response_model=SubscriptionOut,
    status_code=201,
    responses=ERRORS,
    openapi_extra=_CREATE_BODY_DOC,
)
async def create_subscription(
    request: Request,
    response: Response,
    state: StateDep,
    settings: SettingsDep,
    embedder: EncoderDep,
    index: IndexDep,
    live: LiveDep,
) -> SubscriptionOut:
    """A standing query: new posts scoring at least ``min_score`` against it (and passing
    its filters) are recorded as events. The query is embedded once, now, with the
    serving model version; it stays active while that version is served."""
    query, body = await _parse(request, settings.api.max_upload_bytes)
    ctx = search_context(state, embedder, index)
    vector = await query_vector(ctx, query)
    described = await anyio.to_thread.run_sync(_describe, query)
    exclude = (query.post_id,) if query.post_id is not None else ()
    version = embedder.version
    sub = Subscription(
        id=uuid.uuid4().hex,
        name=body.name or f"{query.kind}: {described[:60]}",
        kind=query.kind,
        query=described,
        min_score=body.min_score,
        filter=body.filters.to_index_filter(model_version=version, exclude_post_ids=exclude),
        filters=body.filters.model_dump(mode="json", exclude_defaults=True),
        vector=np.asarray(vector, dtype=np.float32),
        model_version=version,
        created_at_ms=int(time.time() * 1000),
    )
    await live.subscriptions.create(sub, limit=settings.live.max_subscriptions)
    response.headers["Location"] = f"/v1/subscriptions/{sub.id}"
    log.info("subscription %s created (%s, min_score %.3f)", sub.id, sub.kind, sub.min_score)
    return _out(sub, version)


@router.get("/subscriptions", response_model=SubscriptionList, responses=ERRORS)
async def list_subscriptions(
    live: LiveDep,
    embedder: EncoderDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> SubscriptionList:
    """Subscriptions, newest first."""
    page = await live.subscriptions.page(limit=limit, offset=offset)
    return SubscriptionList(
        subscriptions=[_out(s, embedder.version) for s in page.items],
        total=page.total,
        limit=limit,
        offset=offset,
    )


def _check_id(sub_id: str) -> str:
    if len(sub_id) != 32 or not set(sub_id) <= _ID_CHARS:
        raise NotFoundError(f"no subscription {sub_id[:64]!r}")
    return sub_id


async def existing_subscription(
    live: LiveDep, sub_id: Annotated[str, Path(min_length=1, max_length=200)]
) -> Subscription:
    """The subscription named in the path, or 404 (before any response starts)."""
    sub = await live.subscriptions.get(_check_id(sub_id))
    if sub is None:
        raise NotFoundError(f"no subscription {sub_id!r}")
    return sub


SubscriptionDep = Annotated[Subscription, Depends(existing_subscription)]


@router.get("/subscriptions/{sub_id}", response_model=SubscriptionOut, responses=ERRORS)
async def get_subscription(
    sub: SubscriptionDep, live: LiveDep, embedder: EncoderDep
) -> SubscriptionOut:
    return _out(sub, embedder.version, await live.subscriptions.last_event_id(sub.id))


@router.delete("/subscriptions/{sub_id}", status_code=204, responses=ERRORS)
async def delete_subscription(
    live: LiveDep, sub_id: Annotated[str, Path(min_length=1, max_length=200)]
) -> Response:
    """Stop matching and drop the subscription's events; 404 when unknown."""
    if not await live.subscriptions.delete(_check_id(sub_id)):
        raise NotFoundError(f"no subscription {sub_id!r}")
    return Response(status_code=204)


async def resume_point(
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> str:
    """Where a stream starts: after ``Last-Event-ID`` (a reconnect), else after ``after``,
    else at the oldest kept event. A value that is no stream id is a 422."""
    chosen = last_event_id if last_event_id is not None else after
    return "0" if chosen is None else check_event_id(chosen.strip())


@router.get(
    "/subscriptions/{sub_id}/events",
    response_class=EventSourceResponse,
    responses={**json_errors(404, 422, 503), 200: {"content": {"text/event-stream": {}}}},
)
async def subscription_events(
    sub: SubscriptionDep,
    live: LiveDep,
    settings: SettingsDep,
    start: Annotated[str, Depends(resume_point)],
) -> AsyncIterator[ServerSentEvent]:
    """Matches as Server-Sent Events: ``id`` = event id, ``data`` = the match as JSON
    (``post_id``, ``score``, ``row_id``, ``modality``, ``item``, ``moment``, ``text``,
    ``tags``, ``created_at``, ``matched_at``, ``thumbnail``)."""
    store = live.subscriptions
    heartbeat = settings.live.sse_heartbeat_s
    last = start
    yield ServerSentEvent(comment=f"subscription {sub.id} from {last}", retry=2000)
    while True:
        try:
            events = await store.read_events(sub.id, last, count=EVENTS_PER_READ, block_s=heartbeat)
            if not events:
                if await store.get(sub.id) is None:
                    yield ServerSentEvent(event="deleted", data={"subscription": sub.id})
                    return
                yield ServerSentEvent(comment="heartbeat")
                continue
            if live.thumbnails is not None:
                await _attach_thumbnails(live, [e.data for e in events])
        except LiveUnavailableError as exc:
            log.warning("event stream of %s ends, Redis failed: %s", sub.id, exc)
            return  # the client reconnects with Last-Event-ID and resumes exactly
        for event in events:
            yield ServerSentEvent(id=event.id, data=event.data)
            last = event.id


async def _attach_thumbnails(live: LiveServices, items: list[dict[str, Any]]) -> None:
    assert live.thumbnails is not None
    wanted: list[tuple[str, int, int | None]] = []
    for data in items:
        item = int(data.get("item") or 0)
        moment = (data.get("moment") or {}).get("index") if item > 0 else None
        wanted.append((str(data.get("post_id")), item if item > 0 else 1, moment))
    found = await live.thumbnails.existing(list(dict.fromkeys(wanted)))
    for data, key in zip(items, wanted, strict=True):
        data["thumbnail"] = thumbnail_url(*key) if key in found else None
