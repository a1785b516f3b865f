"""One function per API operation: the request it sends and how its answer is read.

Both clients call these, so an endpoint is described once; adding one (trends,
subscriptions) is a builder here and a one-line method in the async client (the
sync client is generated from it).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx

from crossfeed.api.live_models import SubscriptionList, SubscriptionMatch, SubscriptionOut
from crossfeed.api.models import (
    ErasureResponse,
    PostResponse,
    ReadyResponse,
    SearchFilters,
    SearchResponse,
    SuggestTagsResponse,
)
from crossfeed.client._core import (
    ApiRequest,
    Operation,
    ServerEvent,
    error_from_response,
    parse_json,
    parse_model,
)
from crossfeed.client.exceptions import ClientInputError, ProtocolError

# What an image (or video) argument may be: bytes, a path, an open binary file, a PIL image.
ImageInput = bytes | str | os.PathLike[str] | BinaryIO | Any
Filters = SearchFilters | Mapping[str, Any] | None

MAX_FILE_BYTES = 64 * 1024 * 1024  # far above the API's limit: a clear local error first


def media_bytes(media: ImageInput, what: str = "image") -> tuple[str, bytes]:
    """``(file name, bytes)`` of an image argument; a PIL image is sent as PNG."""
    if isinstance(media, bytes | bytearray | memoryview):
        data, name = bytes(media), what
    elif isinstance(media, str | os.PathLike):
        path = Path(media).expanduser()
        if not path.is_file():
            raise ClientInputError(f"{what} file {path} does not exist")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ClientInputError(f"{what} file {path} is {size} bytes; that is too large")
        data, name = path.read_bytes(), path.name
    elif hasattr(media, "save") and hasattr(media, "mode"):  # a PIL image, without importing PIL
        buf = io.BytesIO()
        media.save(buf, format="PNG")
        data, name = buf.getvalue(), f"{what}.png"
    elif hasattr(media, "read"):
        data = media.read(MAX_FILE_BYTES + 1)
        if not isinstance(data, bytes):
            raise ClientInputError(f"{what} file must be opened in binary mode ('rb')")
        if len(data) > MAX_FILE_BYTES:
            raise ClientInputError(f"{what} file is too large")
        name = Path(str(getattr(media, "name", what))).name
    else:
        raise ClientInputError(
            f"{what} must be bytes, a path, a binary file or a PIL image, "
            f"not {type(media).__name__}"
        )
    if not data:
        raise ClientInputError(f"{what} is empty")
    return name, data


def _filters_json(filters: Filters) -> dict[str, Any]:
    if filters is None:
        return {}
    if isinstance(filters, SearchFilters):
        return filters.model_dump(mode="json", exclude_defaults=True)
    if isinstance(filters, Mapping):
        return dict(filters)  # the API validates it (a 422 names the bad field)
    raise ClientInputError(f"filters must be a SearchFilters or a dict, not {type(filters)}")


def search(
    text: str | None = None,
    *,
    image: ImageInput | None = None,
    post_id: str | None = None,
    filters: Filters = None,
    top_k: int = 10,
    cursor: str | None = None,
) -> Operation[SearchResponse]:
    """``POST /v1/search`` with exactly one of a text, an image and a post id."""
    given = [n for n, v in (("text", text), ("image", image), ("post_id", post_id)) if v]
    if len(given) != 1:
        raise ClientInputError(
            f"search needs exactly one of text, image and post_id (got {given or 'none'})"
        )
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ClientInputError(f"top_k must be a positive integer, got {top_k!r}")
    flt = _filters_json(filters)
    if image is not None:
        name, data = media_bytes(image)
        form = {"top_k": str(top_k), "filters": json.dumps(flt)}
        if cursor:
            form["cursor"] = cursor
        request = ApiRequest(
            "POST",
            "/v1/search",
            files={"file": (name, data, "application/octet-stream")},
            data=form,
        )
    else:
        body: dict[str, Any] = {"top_k": top_k, "filters": flt}
        body["text" if text is not None else "post_id"] = text if text is not None else post_id
        if cursor:
            body["cursor"] = cursor
        request = ApiRequest("POST", "/v1/search", json=body)
    return Operation(request, parse_model(SearchResponse))


def get_post(post_id: str) -> Operation[PostResponse]:
    """``GET /v1/posts/{id}`` (the id is percent-encoded: ids may hold ``/`` or ``?``)."""
    if not post_id:
        raise ClientInputError("post_id is empty")
    return Operation(
        ApiRequest("GET", "/v1/posts/" + quote(post_id, safe="")), parse_model(PostResponse)
    )


def erase_post(post_id: str) -> Operation[ErasureResponse]:
    """``DELETE /v1/posts/{id}`` (admin scope); idempotent, so retried like a read."""
    if not post_id:
        raise ClientInputError("post_id is empty")
    return Operation(
        ApiRequest("DELETE", "/v1/posts/" + quote(post_id, safe="")),
        parse_model(ErasureResponse),
    )


def suggest_tags(
    image: ImageInput | None = None,
    *,
    video: ImageInput | None = None,
    post_id: str | None = None,
    top_k: int = 5,
    neighbours: int = 20,
) -> Operation[SuggestTagsResponse]:
    """``POST /v1/suggest-tags`` for an image, a video or an indexed post."""
    given = [n for n, v in (("image", image), ("video", video), ("post_id", post_id)) if v]
    if len(given) != 1:
        raise ClientInputError(
            f"suggest_tags needs exactly one of image, video and post_id (got {given or 'none'})"
        )
    if post_id is not None:
        body = {"post_id": post_id, "top_k": top_k, "neighbours": neighbours}
        request = ApiRequest("POST", "/v1/suggest-tags", json=body)
    else:
        media = image if image is not None else video
        name, data = media_bytes(media, "image" if image is not None else "video")
        request = ApiRequest(
            "POST",
            "/v1/suggest-tags",
            files={"file": (name, data, "application/octet-stream")},
            data={"top_k": str(top_k), "neighbours": str(neighbours)},
        )
    return Operation(request, parse_model(SuggestTagsResponse))


def health() -> Operation[bool]:
    """``GET /healthz``: True when the process answers."""

    def parse(response: httpx.Response) -> bool:
        body = parse_json(response)
        if not isinstance(body, dict) or body.get("status") != "ok":
            raise ProtocolError(f"/healthz answered {body!r}")
        return True

    return Operation(ApiRequest("GET", "/healthz"), parse)


def ready() -> Operation[ReadyResponse]:
    """``GET /readyz``: the engines' checks. A 503 here is an answer ("not ready"), returned
    rather than raised or retried."""
    as_model = parse_model(ReadyResponse)

    def parse(response: httpx.Response) -> ReadyResponse:
        if response.status_code == 503:
            try:
                return ReadyResponse.model_validate_json(response.content)
            except ValueError:
                pass  # a 503 from something else: the usual error below
        return as_model(response)

    return Operation(ApiRequest("GET", "/readyz"), parse)


# ---------------------------------------------------------------------- standing queries


def subscribe(
    text: str | None = None,
    *,
    image: ImageInput | None = None,
    post_id: str | None = None,
    min_score: float,
    filters: Filters = None,
    name: str | None = None,
) -> Operation[SubscriptionOut]:
    """``POST /v1/subscriptions``: a standing query from a text, an image or a post id.

    Not idempotent: a retry after the request left could create a second subscription.
    """
    given = [n for n, v in (("text", text), ("image", image), ("post_id", post_id)) if v]
    if len(given) != 1:
        raise ClientInputError(
            f"subscribe needs exactly one of text, image and post_id (got {given or 'none'})"
        )
    if isinstance(min_score, bool) or not isinstance(min_score, int | float):
        raise ClientInputError(f"min_score must be a number, got {min_score!r}")
    if not -1.0 <= float(min_score) <= 1.0:
        raise ClientInputError(f"min_score is a cosine similarity in [-1, 1], got {min_score}")
    flt = _filters_json(filters)
    if image is not None:
        file_name, data = media_bytes(image)
        form = {"min_score": repr(float(min_score)), "filters": json.dumps(flt)}
        if name:
            form["name"] = name
        request = ApiRequest(
            "POST",
            "/v1/subscriptions",
            files={"file": (file_name, data, "application/octet-stream")},
            data=form,
        )
    else:
        body: dict[str, Any] = {"min_score": float(min_score), "filters": flt}
        body["text" if text is not None else "post_id"] = text if text is not None else post_id
        if name:
            body["name"] = name
        request = ApiRequest("POST", "/v1/subscriptions", json=body)
    return Operation(request, parse_model(SubscriptionOut), idempotent=False)


def _sub_path(subscription_id: str) -> str:
    if not subscription_id:
        raise ClientInputError("subscription id is empty")
    return "/v1/subscriptions/" + quote(subscription_id, safe="")


def list_subscriptions(limit: int = 100, offset: int = 0) -> Operation[SubscriptionList]:
    """``GET /v1/subscriptions`` (one page)."""
    if limit < 1 or offset < 0:
        raise ClientInputError("limit must be positive and offset not negative")
    params = {"limit": str(limit), "offset": str(offset)}
    return Operation(
        ApiRequest("GET", "/v1/subscriptions", params=params), parse_model(SubscriptionList)
    )


def get_subscription(subscription_id: str) -> Operation[SubscriptionOut]:
    """``GET /v1/subscriptions/{id}``."""
    return Operation(ApiRequest("GET", _sub_path(subscription_id)), parse_model(SubscriptionOut))


def delete_subscription(subscription_id: str) -> Operation[None]:
    """``DELETE /v1/subscriptions/{id}`` (204); idempotent in effect, so retried."""

    def parse(response: httpx.Response) -> None:
        if not response.is_success:
            raise error_from_response(response)

    return Operation(ApiRequest("DELETE", _sub_path(subscription_id)), parse)


def events_path(subscription_id: str) -> str:
    return _sub_path(subscription_id) + "/events"


def match_from_event(event: ServerEvent) -> SubscriptionMatch | None:
    """The match an event carries; ``None`` for the ``deleted`` event that ends a stream
    (the subscription was deleted). Other event types are a protocol error."""
    if event.event == "deleted":
        return None
    if event.event not in ("", "message"):
        raise ProtocolError(f"unexpected event {event.event!r} on a subscription stream")
    data = event.json()
    if not isinstance(data, dict):
        raise ProtocolError(f"event data is not an object: {data!r}"[:200])
    try:
        return SubscriptionMatch.model_validate({**data, "event_id": event.id})
    except ValueError as exc:
        raise ProtocolError(f"event data is not a match: {exc}") from exc
