"""``POST /v1/suggest-tags``: hashtags for an untagged image, video or indexed post.

Two body types, dispatched on Content-Type like ``/v1/search``:

* ``multipart/form-data``: an image or a video in ``file`` (told apart by its
  first bytes), optional ``top_k`` and ``neighbours`` fields;
* ``application/json``: :class:`SuggestTagsRequest`, an indexed post whose
  stored media vector (else text vector) is used; the post itself never votes.

The item is embedded with the serving model, its nearest indexed posts vote
for their tags (see :mod:`crossfeed.retrieval.suggest`), and when the head
version is a tag space its own tag posterior is mixed in.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from crossfeed.api.deps import EncoderDep, IndexDep, SettingsDep, StateDep
from crossfeed.api.exceptions import BadRequestError, UnsupportedMediaTypeError
from crossfeed.api.models import (
    ERRORS,
    PRINTABLE_ID,
    NeighbourPost,
    SuggestQuery,
    SuggestTagsResponse,
    TagScore,
)
from crossfeed.api.upload import read_json, read_upload_form
from crossfeed.core.schema import MAX_ID_CHARS
from crossfeed.core.settings import Settings
from crossfeed.encoders.base import Embedder
from crossfeed.encoders.media import decode_image, decode_video, sniff_container
from crossfeed.indexer.base import VectorIndex
from crossfeed.retrieval.hits import query_row_for_post
from crossfeed.retrieval.suggest import (
    MAX_NEIGHBOURS,
    suggest_tags_for_media,
)

router = APIRouter(prefix="/v1")

MAX_SUGGESTIONS = 50
MAX_JSON_BYTES = 16 * 1024

_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/SuggestTagsRequest"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "additionalProperties": False,
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "top_k": {"type": "integer", "minimum": 1, "maximum": MAX_SUGGESTIONS},
                        "neighbours": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_NEIGHBOURS,
                        },
                    },
                }
            },
        },
    }
}


class SuggestTagsRequest(BaseModel):
    """JSON body: tags for an indexed post."""

    model_config = ConfigDict(extra="forbid")

    post_id: str = Field(
        min_length=1, max_length=MAX_ID_CHARS, json_schema_extra={"pattern": PRINTABLE_ID}
    )
    top_k: int = Field(default=5, ge=1, le=MAX_SUGGESTIONS)
    neighbours: int = Field(default=20, ge=1, le=MAX_NEIGHBOURS)

    @field_validator("post_id")
    @classmethod
    def _printable(cls, v: str) -> str:
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in v):
            raise ValueError("post_id contains control characters")
        return v


def _int_field(fields: dict[str, str], name: str, default: int, upper: int) -> int:
    raw = fields.get(name)
    try:
        value = default if raw is None or raw == "" else int(raw)
    except ValueError as exc:
        raise BadRequestError(f"{name} must be an integer") from exc
    if not 1 <= value <= upper:
        raise BadRequestError(f"{name} must be between 1 and {upper}, got {value}")
    return value


def _embed_upload(
    embedder: Embedder, settings: Settings, data: bytes
) -> tuple[SuggestQuery, np.ndarray, dict[str, float] | None]:
    """Decode with the API's limits and embed (blocking; runs in a worker thread)."""
    max_bytes = settings.api.max_upload_bytes
    max_pixels = settings.encoder.max_image_pixels
    container = sniff_container(data[:512])
    if container is not None and container != "gif":  # a GIF is taken as a still image
        enc = settings.encoder
        frames = decode_video(
            data,
            enc.video_fps,
            enc.video_max_frames,
            max_bytes,
            max_pixels=max_pixels,
            max_total_frames=enc.max_media_frames,
        )
        vectors, posteriors = embedder.embed_media_with_posterior(
            "video", [[frame for _, frame in frames]]
        )
        return "video", vectors[0], posteriors[0] if posteriors else None
    image = decode_image(
        data, max_bytes, max_pixels, max_total_frames=settings.encoder.max_media_frames
    )
    vectors, posteriors = embedder.embed_media_with_posterior("image", [image])
    return "image", vectors[0], posteriors[0] if posteriors else None


def _post_vector(index: VectorIndex, post_id: str, version: str) -> np.ndarray:
    """The post's first media vector of the serving version, else its text vector."""
    row = query_row_for_post(index.get_post(post_id), post_id, version, prefer_media=True)
    return np.asarray(row.vector, dtype=np.float32)


@router.post(
    "/suggest-tags",
    response_model=SuggestTagsResponse,
    responses=ERRORS,
    openapi_extra=_BODY_DOC,
)
async def suggest_tags(
    request: Request,
    state: StateDep,
    settings: SettingsDep,
    embedder: EncoderDep,
    index: IndexDep,
) -> SuggestTagsResponse:
    """Hashtags for an uploaded image or video, or for an indexed post.

    Tags come from the nearest indexed posts of the serving model version,
    each voting with its tags weighted by similarity; ``neighbours`` lists
    them (each post once). Scores are in [0, 1], best first.
    """
    started = time.perf_counter()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    posterior: dict[str, float] | None = None
    exclude: tuple[str, ...] = ()
    if content_type == "multipart/form-data":
        data, fields = await read_upload_form(
            request,
            max_file_bytes=settings.api.max_upload_bytes,
            allowed_fields=frozenset({"top_k", "neighbours"}),
        )
        top_k = _int_field(fields, "top_k", 5, MAX_SUGGESTIONS)
        n_neighbours = _int_field(fields, "neighbours", 20, MAX_NEIGHBOURS)
        query, vector, posterior = await anyio.to_thread.run_sync(
            _embed_upload, embedder, settings, data, limiter=state.encode_limiter
        )
    elif content_type == "application/json":
        payload = await read_json(request, MAX_JSON_BYTES)
        try:
            body = SuggestTagsRequest.model_validate(payload)
        except ValidationError as exc:
            raise BadRequestError(
                "invalid suggest-tags request",
                details=exc.errors(include_url=False, include_context=False),
            ) from exc
        top_k, n_neighbours, query = body.top_k, body.neighbours, "post"
        vector = await anyio.to_thread.run_sync(_post_vector, index, body.post_id, embedder.version)
        exclude = (body.post_id,)
    else:
        raise UnsupportedMediaTypeError(
            "send multipart/form-data with an image or video in 'file', "
            "or application/json {'post_id': ...}"
        )
    suggestions, neighbours = await anyio.to_thread.run_sync(
        lambda: suggest_tags_for_media(
            index,
            vector.tolist(),
            model_version=embedder.version,
            posterior=posterior,
            neighbours=n_neighbours,
            exclude_post_ids=exclude,
            top_k=top_k,
        )
    )
    return SuggestTagsResponse(
        tags=[TagScore(tag=s.tag, score=round(s.score, 6), support=s.support) for s in suggestions],
        neighbours=[NeighbourPost(post_id=n.post_id, score=round(n.score, 6)) for n in neighbours],
        query=query,
        model_version=embedder.version,
        used_posterior=posterior is not None,
        took_ms=round((time.perf_counter() - started) * 1000, 3),
    )
