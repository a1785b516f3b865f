# Generated from crossfeed/client/_async/client.py by `python -m crossfeed.client.codegen`.
# Do not edit: change the async file and run the generator again.
"""The synchronous crossfeed client, :class:`~crossfeed.client.Client`.

Generated from ``_async/client.py`` (the asynchronous client) by
``python -m crossfeed.client.codegen``, so the two never drift apart. Requests are
built and answers read by :mod:`crossfeed.client._operations` (shared); this class
only sends them, with retries (:class:`~crossfeed.client.RetryPolicy`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import TypeVar

import httpx
import stamina
from pydantic import SecretStr

from crossfeed.api.live_models import SubscriptionList, SubscriptionMatch, SubscriptionOut
from crossfeed.api.models import (
    ErasureResponse,
    PostResponse,
    ReadyResponse,
    SearchResponse,
    SearchResult,
    SuggestTagsResponse,
)
from crossfeed.client import _operations as ops
from crossfeed.client._core import (
    ClientConfig,
    Operation,
    RetryPolicy,
    ServerEvent,
    retry_on,
    transport_error,
)
from crossfeed.client._operations import Filters, ImageInput
from crossfeed.client._sync._io import monotonic, sleep
from crossfeed.client._sync.events import iter_events
from crossfeed.client.exceptions import (
    ClientError,
    ClientInputError,
    NotFoundError,
    RequestTimeoutError,
)

log = logging.getLogger("crossfeed.client")

T = TypeVar("T")


class Client:
    """A client of the crossfeed query API (``with Client() as client: ...``).

    ``url`` defaults to ``CROSSFEED_API_URL`` (else the local API's host and port),
    ``api_key`` to ``CROSSFEED_API_KEY`` (sent as ``X-API-Key``), ``timeout`` (seconds
    per request, or an ``httpx.Timeout``) to ``CROSSFEED_CLIENT_TIMEOUT``; ``retry`` is a
    :class:`RetryPolicy` or a number of retries (``CROSSFEED_CLIENT_RETRIES``).
    Connection errors and 503 answers are retried with back-off; nothing else is.
    Errors are :class:`~crossfeed.client.exceptions.ClientError` subclasses.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | SecretStr | None = None,
        timeout: float | httpx.Timeout | None = None,
        retry: RetryPolicy | int | None = None,
        headers: Mapping[str, str] | None = None,
        event_read_timeout: float = 75.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._config = ClientConfig.build(
            url,
            api_key=api_key,
            timeout=timeout,
            retry=retry,
            headers=headers,
            event_read_timeout_s=event_read_timeout,
        )
        self._http = httpx.Client(**self._config.httpx_kwargs(), transport=transport)

    @property
    def url(self) -> str:
        return self._config.url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._config.url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections (also done by leaving ``with``)."""
        self._http.close()

    def _call(self, op: Operation[T]) -> T:
        """Send ``op``, retrying per the policy, and read its answer."""
        policy = self._config.retry
        try:
            for attempt in stamina.retry_context(
                on=retry_on(policy, idempotent=op.idempotent), **policy.stamina_kwargs()
            ):
                with attempt:
                    response = self._http.request(**op.request.httpx_kwargs())
                    return op.parse(response)
        except httpx.TransportError as exc:
            raise transport_error(exc, self._config.url) from exc
        raise AssertionError("unreachable")  # stamina either returned or raised

    # ------------------------------------------------------------------ search

    def search(
        self,
        text: str | None = None,
        *,
        image: ImageInput | None = None,
        post_id: str | None = None,
        filters: Filters = None,
        top_k: int = 10,
        cursor: str | None = None,
    ) -> SearchResponse:
        """One page of posts nearest to a text, an image (bytes, a path, a binary file or a
        PIL image) or an indexed post; ``filters`` is a ``SearchFilters`` or its dict
        (``{"sources": ["bluesky"], "authors": [...], "tags": [...], "since": ...}``).
        Pass a page's ``next_cursor`` as ``cursor`` (same query) for the next page."""
        return self._call(
            ops.search(
                text,
                image=image,
                post_id=post_id,
                filters=filters,
                top_k=top_k,
                cursor=cursor,
            )
        )

    def search_pages(
        self,
        text: str | None = None,
        *,
        image: ImageInput | None = None,
        post_id: str | None = None,
        filters: Filters = None,
        page_size: int = 10,
        max_pages: int | None = None,
    ) -> Iterator[SearchResponse]:
        """Every page of a search, first to last (or ``max_pages``). Raises
        :class:`~crossfeed.client.exceptions.StaleCursorError` when the index changed
        between two pages (start again)."""
        media = ops.media_bytes(image)[1] if image is not None else None  # read once
        cursor: str | None = None
        pages = 0
        while True:
            page = self.search(
                text,
                image=media,
                post_id=post_id,
                filters=filters,
                top_k=page_size,
                cursor=cursor,
            )
            yield page
            pages += 1
            cursor = page.next_cursor
            if cursor is None or (max_pages is not None and pages >= max_pages):
                return

    def iter_search(
        self,
        text: str | None = None,
        *,
        image: ImageInput | None = None,
        post_id: str | None = None,
        filters: Filters = None,
        page_size: int = 10,
        limit: int | None = None,
    ) -> Iterator[SearchResult]:
        """Every result of a search across pages, best first (at most ``limit``)."""
        if limit is not None and limit < 1:
            raise ClientInputError("limit must be positive")
        count = 0
        for page in self.search_pages(
            text, image=image, post_id=post_id, filters=filters, page_size=page_size
        ):
            for result in page.results:
                yield result
                count += 1
                if limit is not None and count >= limit:
                    return

    # ------------------------------------------------------------------ posts, tags

    def get_post(self, post_id: str) -> PostResponse:
        """A post's stored fields; :class:`~crossfeed.client.exceptions.NotFoundError`
        when the index does not hold it."""
        return self._call(ops.get_post(post_id))

    def erase_post(self, post_id: str) -> ErasureResponse:
        """Erase a post everywhere (needs an admin key when the API asks for keys); the
        answer comes once no query finds it."""
        return self._call(ops.erase_post(post_id))

    def suggest_tags(
        self,
        image: ImageInput | None = None,
        *,
        video: ImageInput | None = None,
        post_id: str | None = None,
        top_k: int = 5,
        neighbours: int = 20,
    ) -> SuggestTagsResponse:
        """Hashtags for an image, a video or an indexed post, from its nearest posts."""
        return self._call(
            ops.suggest_tags(
                image, video=video, post_id=post_id, top_k=top_k, neighbours=neighbours
            )
        )

    # ------------------------------------------------------------------ health

    def health(self) -> bool:
        """True when the API process answers ``/healthz``."""
        return self._call(ops.health())

    def ready(self) -> ReadyResponse:
        """The API's engine checks (``status`` "ok" or "unavailable"); never raises for
        "not ready"."""
        return self._call(ops.ready())

    def wait_until_ready(self, timeout: float = 60.0, interval: float = 0.5) -> None:
        """Return once ``/readyz`` says ok; :class:`RequestTimeoutError` naming the
        failing checks after ``timeout`` seconds."""
        deadline = monotonic() + timeout
        reason = "no answer yet"
        while True:
            try:
                state = self.ready()
                if state.status == "ok":
                    return
                reason = ", ".join(
                    f"{name}: {check.detail or 'down'}"
                    for name, check in state.checks.items()
                    if not check.ok
                )
            except ClientError as exc:
                if not exc.retriable:
                    raise
                reason = str(exc)
            if monotonic() >= deadline:
                raise RequestTimeoutError(f"API not ready after {timeout:.0f} s: {reason}")
            sleep(interval)

    def wait_for_posts(
        self, post_ids: Iterable[str], timeout: float = 60.0, interval: float = 0.5
    ) -> None:
        """Return once every post is indexed (for demos and tests that just produced them);
        :class:`RequestTimeoutError` naming those still missing after ``timeout`` seconds."""
        missing = list(dict.fromkeys(post_ids))
        deadline = monotonic() + timeout
        while missing:
            still: list[str] = []
            for post_id in missing:
                try:
                    self.get_post(post_id)
                except NotFoundError:
                    still.append(post_id)
            missing = still
            if not missing:
                return
            if monotonic() >= deadline:
                raise RequestTimeoutError(
                    f"{len(missing)} posts not indexed after {timeout:.0f} s: {missing[:5]}"
                )
            sleep(interval)

    # ------------------------------------------------------------------ standing queries

    def subscribe(
        self,
        text: str | None = None,
        *,
        image: ImageInput | None = None,
        post_id: str | None = None,
        min_score: float,
        filters: Filters = None,
        name: str | None = None,
    ) -> SubscriptionOut:
        """A standing query: posts indexed from now on that score at least ``min_score``
        against a text, an image or an indexed post (and pass ``filters``) are recorded as
        matches; read them with :meth:`matches`. Not retried once sent (a retry could
        create a twin)."""
        return self._call(
            ops.subscribe(
                text, image=image, post_id=post_id, min_score=min_score, filters=filters, name=name
            )
        )

    def subscriptions(self, limit: int = 100, offset: int = 0) -> SubscriptionList:
        """One page of the stored subscriptions."""
        return self._call(ops.list_subscriptions(limit, offset))

    def get_subscription(self, subscription_id: str) -> SubscriptionOut:
        """One subscription; :class:`~crossfeed.client.exceptions.NotFoundError` if unknown."""
        return self._call(ops.get_subscription(subscription_id))

    def unsubscribe(self, subscription_id: str) -> None:
        """Delete a subscription (its stream of matches ends)."""
        self._call(ops.delete_subscription(subscription_id))

    def matches(
        self,
        subscription_id: str,
        *,
        last_event_id: str | None = None,
        max_reconnects: int | None = 10,
    ) -> Iterator[SubscriptionMatch]:
        """The subscription's matches as they arrive, forever (until it is deleted).

        After ``last_event_id`` (a previous match's ``event_id``); by default from the
        oldest match the server still retains. A dropped connection is resumed with
        ``Last-Event-ID``: no match is missed or repeated within the server's retention.
        """
        stream = self.events(
            ops.events_path(subscription_id),
            last_event_id=last_event_id,
            max_reconnects=max_reconnects,
        )
        for event in stream:
            match = ops.match_from_event(event)
            if match is None:
                return
            yield match

    def watch(
        self,
        text: str | None = None,
        *,
        image: ImageInput | None = None,
        post_id: str | None = None,
        min_score: float,
        filters: Filters = None,
        name: str | None = None,
    ) -> Iterator[SubscriptionMatch]:
        """Subscribe, yield matches as they arrive, and delete the subscription when the
        caller stops iterating (break, an exception, Ctrl-C)."""
        sub = self.subscribe(
            text, image=image, post_id=post_id, min_score=min_score, filters=filters, name=name
        )
        try:
            for match in self.matches(sub.id):
                yield match
        finally:
            try:
                self.unsubscribe(sub.id)
            except ClientError as exc:
                log.warning("could not delete subscription %s: %s", sub.id, exc)

    # ------------------------------------------------------------------ event streams

    def events(
        self,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        last_event_id: str | None = None,
        max_reconnects: int | None = 10,
    ) -> Iterator[ServerEvent]:
        """The server-sent events of ``GET path``, resuming with ``Last-Event-ID`` after a
        dropped connection (see :mod:`crossfeed.client._async.events`)."""
        if not path.startswith("/"):
            raise ClientInputError(f"event path must start with '/', got {path!r}")
        return iter_events(
            self._http,
            self._config,
            path,
            params=params,
            last_event_id=last_event_id,
            max_reconnects=max_reconnects,
        )
