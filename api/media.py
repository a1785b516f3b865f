"""``GET /v1/posts/{id}/media/{item}``: the stored thumbnail of a post's image or video.

Thumbnails are made once by the stream (:mod:`crossfeed.live.thumbs`) and read from
Redis; nothing here fetches a URL or decodes user input. ``?moment=k`` asks for a video
moment's frame. 404 when none is kept (text items, expired or never made).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from crossfeed.api.deps import LiveDep
from crossfeed.api.exceptions import NotFoundError
from crossfeed.api.models import PRINTABLE_ID, json_errors
from crossfeed.core.schema import MAX_ID_CHARS, MAX_MEDIA
from crossfeed.encoders.moments import MAX_MOMENTS
from crossfeed.live.thumbs import JPEG_MIME

router = APIRouter(prefix="/v1", tags=["media"])

CACHE_SECONDS = 3600  # a post's media never change under its id


@router.get(
    "/posts/{post_id:path}/media/{item}",
    response_class=Response,
    responses={200: {"content": {JPEG_MIME: {}}}, **json_errors(404, 422)},
)
async def post_media(
    live: LiveDep,
    post_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS, pattern=PRINTABLE_ID)],
    item: Annotated[int, Path(ge=1, le=MAX_MEDIA)],
    moment: Annotated[int | None, Query(ge=0, lt=MAX_MOMENTS)] = None,
) -> Response:
    """A small JPEG (at most ``CROSSFEED_THUMB_PX`` px, ``CROSSFEED_THUMB_MAX_BYTES``)."""
    data = None if live.thumbnails is None else await live.thumbnails.get(post_id, item, moment)
    if data is None:
        where = f"item {item}" + ("" if moment is None else f" moment {moment}")
        raise NotFoundError(f"no thumbnail for post {post_id!r} {where}")
    return Response(
        data,
        media_type=JPEG_MIME,
        headers={
            "Cache-Control": f"public, max-age={CACHE_SECONDS}",
            "X-Content-Type-Options": "nosniff",
        },
    )
