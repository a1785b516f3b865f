"""crossfeed.client: a typed Python client of the crossfeed query API, sync and async.

::

    from crossfeed.client import Client

    with Client() as client:  # CROSSFEED_API_URL, CROSSFEED_API_KEY
        page = client.search("cute cat", filters={"sources": ["bluesky"]}, top_k=5)
        for hit in page.results:
            print(hit.score, hit.id, hit.text)

:class:`AsyncClient` has the same methods as coroutines (and async iterators for
pages and event streams); :class:`Client` is generated from it. Results are the
API's own pydantic models (:mod:`crossfeed.api.models`); errors are the tree in
:mod:`crossfeed.client.exceptions`. Importing this package loads neither FastAPI
nor torch.
"""

from __future__ import annotations

from crossfeed.api.live_models import SubscriptionList, SubscriptionMatch, SubscriptionOut
from crossfeed.api.models import (
    PostItem,
    PostResponse,
    ReadyResponse,
    SearchFilters,
    SearchResponse,
    SearchResult,
    SuggestTagsResponse,
)
from crossfeed.client._async.client import AsyncClient
from crossfeed.client._core import RetryPolicy, ServerEvent
from crossfeed.client._sync.client import Client
from crossfeed.client.exceptions import (
    ApiResponseError,
    BadRequestError,
    ClientError,
    ClientInputError,
    ConflictError,
    ConnectionFailedError,
    ForbiddenError,
    InvalidCursorError,
    NotFoundError,
    ProtocolError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
    StaleCursorError,
    UnauthorizedError,
    UnavailableError,
)

__all__ = [
    "ApiResponseError",
    "AsyncClient",
    "BadRequestError",
    "Client",
    "ClientError",
    "ClientInputError",
    "ConflictError",
    "ConnectionFailedError",
    "ForbiddenError",
    "InvalidCursorError",
    "NotFoundError",
    "PostItem",
    "PostResponse",
    "ProtocolError",
    "RateLimitedError",
    "ReadyResponse",
    "RequestTimeoutError",
    "RetryPolicy",
    "SearchFilters",
    "SearchResponse",
    "SearchResult",
    "ServerError",
    "ServerEvent",
    "StaleCursorError",
    "SubscriptionList",
    "SubscriptionMatch",
    "SubscriptionOut",
    "SuggestTagsResponse",
    "UnauthorizedError",
    "UnavailableError",
]
