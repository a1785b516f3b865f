"""``POST /v1/search`` and ``GET /v1/posts/{id}``.

One search path takes two body types, dispatched on Content-Type:

* ``application/json``: :class:`~crossfeed.api.models.SearchRequest`, a text or a post id;
* ``multipart/form-data``: an image in ``file``, optional ``filters`` (JSON of
  :class:`~crossfeed.api.models.SearchFilters`) and ``top_k`` fields.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Path, Request
from pydantic import ValidationError

from crossfeed.api.deps import (
    CacheDep,
    EncoderDep,
    IndexDep,
    LiveDep,
    MetricsDep,
    SettingsDep,
    StateDep,
    search_context,
)
from crossfeed.api.exceptions import BadRequestError, NotFoundError, UnsupportedMediaTypeError
from crossfeed.api.models import (
    ERRORS,
    MAX_CURSOR_CHARS,
    PRINTABLE_ID,
    PostItem,
    PostResponse,
    SearchFilters,
    SearchRequest,
    SearchResponse,
)
from crossfeed.api.retry import engine_call
from crossfeed.api.search import Query, moment_span, run_search
from crossfeed.api.trend_service import scope_to_trend
from crossfeed.api.upload import read_json, read_upload_form
from crossfeed.core.schema import MAX_ID_CHARS, MAX_TEXT_CHARS

router = APIRouter(prefix="/v1")

# A JSON search body: the text (4 bytes per character at worst) plus filters.
MAX_JSON_BYTES = 4 * MAX_TEXT_CHARS + 64 * 1024

_SEARCH_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/SearchRequest"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "additionalProperties": False,
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "filters": {
                            "type": "string",
                            "description": "JSON object, see SearchFilters",
                        },
                        "top_k": {"type": "integer", "minimum": 1},
                        "cursor": {
                            "type": "string",
                            "maxLength": MAX_CURSOR_CHARS,
                            "description": "next_cursor of a page",
                        },
                    },
                }
            },
        },
    }
}


def _validation_error(exc: ValidationError, what: str) -> BadRequestError:
    return BadRequestError(
        f"invalid {what}", details=exc.errors(include_url=False, include_context=False)
    )


def _check_top_k(top_k: int, max_top_k: int) -> None:
    if not 1 <= top_k <= max_top_k:
        raise BadRequestError(f"top_k must be between 1 and {max_top_k}, got {top_k}")


async def _parse_search(request: Request, max_upload_bytes: int) -> Query:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        payload = await read_json(request, MAX_JSON_BYTES)
        try:
            body = SearchRequest.model_validate(payload)
        except ValidationError as exc:
            raise _validation_error(exc, "search request") from exc
        if body.text is not None:
            return Query.for_text(body.text, body.top_k, body.filters, body.cursor)
        return Query(
            kind="post",
            top_k=body.top_k,
            filters=body.filters,
            post_id=body.post_id,
            cursor=body.cursor,
        )
    if content_type == "multipart/form-data":
        data, fields = await read_upload_form(
            request,
            max_file_bytes=max_upload_bytes,
            allowed_fields=frozenset({"filters", "top_k", "cursor"}),
        )
        try:
            filters = SearchFilters.model_validate_json(fields.get("filters") or "{}")
        except ValidationError as exc:
            raise _validation_error(exc, "filters") from exc
        try:
            top_k = int(fields.get("top_k") or 10)
        except ValueError as exc:
            raise BadRequestError("top_k must be an integer") from exc
        cursor = fields.get("cursor") or None
        if cursor is not None and len(cursor) > MAX_CURSOR_CHARS:
            raise BadRequestError(f"cursor is longer than {MAX_CURSOR_CHARS} characters")
        return Query(kind="image", top_k=top_k, filters=filters, image=data, cursor=cursor)
    raise UnsupportedMediaTypeError(
        "send application/json ({'text': ...} or {'post_id': ...}) "
        "or multipart/form-data with an image in 'file'"
    )


@router.post(
    "/search",
    response_model=SearchResponse,
    responses=ERRORS,
    openapi_extra=_SEARCH_BODY_DOC,
)
async def search(
    request: Request,
    state: StateDep,
    settings: SettingsDep,
    embedder: EncoderDep,
    index: IndexDep,
    cache: CacheDep,
    metrics: MetricsDep,
    live: LiveDep,
) -> SearchResponse:
    """Nearest posts to a text, an uploaded image, or an indexed post.

    Results are deduplicated per post: each post appears once, represented by its
    best-scoring item, and posts are ordered by that score. A post-id query uses
    the post's stored text vector (else its first media vector) and never returns
    the post itself. ``cached`` tells whether the answer came from the cache;
    ``epoch`` and ``model_version`` identify the index state it reflects.

    Pages: ``next_cursor`` (None on the last page) sent back as ``cursor`` with the
    same query and filters returns the next ``top_k`` posts; it stays valid while
    the index epoch is unchanged (409 after that; 422 with another query).

    ``freshness`` says how current the index is (never cached); a hit whose media has a
    stored thumbnail carries its URL in ``thumbnail``. ``filters.trend`` (an id from
    ``GET /v1/trends``) keeps only that trend's recent posts; 404 for an unknown trend.
    """
    query = await _parse_search(request, settings.api.max_upload_bytes)
    _check_top_k(query.top_k, settings.api.max_top_k)
    if query.filters.trend is not None:
        members = await scope_to_trend(state.trends, query.filters.trend)
        query = dataclasses.replace(query, post_ids=members)
    ctx = search_context(state, embedder, index, thumbnails=live.thumbnails)
    # The index's freshness is read while the search runs (one Redis round trip less on
    # the answer's way), and before it answers, so `indexed_through` never claims more
    # than the results hold. Redis away (the answer is marked degraded): not read.
    reading = None if cache.degraded else asyncio.ensure_future(live.freshness())
    try:
        response = await run_search(ctx, query)
    except BaseException:
        if reading is not None:
            reading.cancel()
        raise
    if reading is None or response.degraded:
        if reading is not None:
            reading.cancel()
        response.freshness = await live.freshness(read_index=False)
    else:
        response.freshness = await reading
    return response


@router.get("/posts/{post_id:path}", response_model=PostResponse, responses=ERRORS)
async def get_post(
    state: StateDep,
    index: IndexDep,
    settings: SettingsDep,
    live: LiveDep,
    post_id: str = Path(min_length=1, max_length=MAX_ID_CHARS, pattern=PRINTABLE_ID),
) -> PostResponse:
    """A post's stored fields (no vectors); 404 when no collection of this deployment
    holds it. A repost answers with the original it repeats (``duplicate_of``); a post
    indexed under another model version only, with that version's rows."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in post_id):
        raise BadRequestError("post id contains control characters")
    budget = settings.api.retry_budget_s
    rows = await engine_call(budget, index.get_post, post_id)
    original = None if rows else await live.original_of(post_id)
    if original is not None:
        rows = await engine_call(budget, index.get_post, original)
    if not rows and state.elsewhere is not None:
        rows = await engine_call(budget, state.elsewhere, original or post_id)
    if not rows:
        raise NotFoundError(f"post {post_id!r} is not in the index")
    main = next((r for r in rows if r.modality == "text"), rows[0])
    return PostResponse(
        id=post_id,
        author=main.author,
        source=main.source or None,
        text=main.text,
        tags=list(main.tags),
        lang=main.lang or None,
        created_at=datetime.fromtimestamp(main.created_at_ms / 1000, tz=UTC),
        items=[
            PostItem(
                item=r.item,
                modality=r.modality,
                media_ref=r.media_ref or None,
                model_version=r.model_version,
                suggested_tags=list(r.suggested_tags),
                moment=moment_span(r),
            )
            for r in rows
        ],
        duplicate_of=original,
    )
