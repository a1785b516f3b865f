"""Client and AsyncClient against the real API (uvicorn on a loopback port, in-memory fakes)."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from crossfeed.api.cache import MemorySearchCache
from crossfeed.client import (
    AsyncClient,
    BadRequestError,
    Client,
    ConnectionFailedError,
    InvalidCursorError,
    NotFoundError,
    RetryPolicy,
    SearchFilters,
    SearchResponse,
    SearchResult,
    StaleCursorError,
    UnavailableError,
)
from crossfeed.client.exceptions import ClientInputError

FAST = RetryPolicy(attempts=4, wait_initial_s=0.01, wait_max_s=0.05, wait_jitter_s=0.0)


def _picture(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buf, format="PNG")
    return buf.getvalue()


def test_text_search_returns_the_api_models(api_url: str) -> None:
    with Client(api_url) as client:
        page = client.search("cats sleeping on a sofa", top_k=3)
    assert isinstance(page, SearchResponse)
    assert isinstance(page.results[0], SearchResult)
    assert page.results[0].id == "cats1"
    assert page.results[0].source == "mastodon" and page.results[0].author == "@author0"
    assert len(page.results) == 3 and page.query == "text" and page.next_cursor


def test_filters_as_dict_or_model(api_url: str) -> None:
    with Client(api_url) as client:
        by_dict = client.search("cats", filters={"sources": ["bluesky"]}, top_k=20)
        by_model = client.search("cats", filters=SearchFilters(authors=["@author2"]), top_k=20)
        tagged = client.search("cats", filters={"tags": ["#Pets"]}, top_k=20)
    assert {r.source for r in by_dict.results} == {"bluesky"}
    assert [r.id for r in by_model.results] == ["dogs1"]
    assert {r.id for r in tagged.results} == {"cats1", "cats2", "dogs1"}


@pytest.mark.parametrize("kind", ["bytes", "path", "pil", "file"])
def test_image_search_takes_bytes_paths_files_and_pil_images(
    api_url: str, tmp_path: Path, kind: str
) -> None:
    data = _picture((200, 25, 25))
    path = tmp_path / "red.png"
    path.write_bytes(data)
    image: Any = {
        "bytes": data,
        "path": str(path),
        "pil": Image.open(io.BytesIO(data)),
        "file": path.open("rb"),
    }[kind]
    with Client(api_url) as client:
        page = client.search(image=image, top_k=2)
    assert page.query == "image" and page.results[0].id == "img0"


def test_post_id_search_and_get_post_with_awkward_ids(api_url: str) -> None:
    with Client(api_url) as client:
        similar = client.search(post_id="cats1", top_k=2)
        post = client.get_post("a/b?c#d")  # percent-encoded on the way
    assert "cats1" not in {r.id for r in similar.results}
    assert len(similar.results) == 2 and similar.query == "post"
    assert post.id == "a/b?c#d" and post.items[0].modality == "text"


def test_not_found_and_bad_requests_are_typed_errors(api_url: str, index: Any) -> None:
    with Client(api_url, retry=FAST) as client:
        with pytest.raises(NotFoundError, match="not in the index") as missing:
            client.get_post("nope")
        assert missing.value.status == 404
        before = index.searches
        with pytest.raises(BadRequestError) as bad:
            client.search("cats", top_k=10_000)
        assert bad.value.status == 422 and "top_k" in bad.value.message
        with pytest.raises(BadRequestError) as bad_filter:
            client.search("cats", filters={"sourcez": ["x"]})
        assert bad_filter.value.details and bad_filter.value.details[0]["loc"]
        assert index.searches == before  # 4xx: never retried (nor searched)


def test_arguments_are_checked_before_sending(api_url: str) -> None:
    with Client(api_url) as client:
        with pytest.raises(ClientInputError, match="exactly one"):
            client.search("cats", post_id="x")
        with pytest.raises(ClientInputError, match="exactly one"):
            client.search()
        with pytest.raises(ClientInputError, match="does not exist"):
            client.search(image="/no/such/file.png")
        with pytest.raises(ClientInputError):
            client.search("cats", top_k=0)
    with pytest.raises(ClientInputError, match="http"):
        Client("ftp://example.org")


def test_503_is_retried_until_it_succeeds_waiting_retry_after(api_url: str, index: Any) -> None:
    index.failures = 2
    # The API says Retry-After: 2; capped at 0.15 s here, it still replaces the 0.01 s back-off.
    policy = RetryPolicy(attempts=4, wait_initial_s=0.01, wait_jitter_s=0.0, max_retry_after_s=0.15)
    started = time.monotonic()
    with Client(api_url, retry=policy) as client:
        page = client.search("cats", top_k=1)
    assert page.results and index.searches == 3
    assert time.monotonic() - started >= 0.3


def test_503_gives_up_after_the_attempts(api_url: str, index: Any) -> None:
    index.failures = 10
    policy = RetryPolicy(attempts=2, wait_jitter_s=0, max_retry_after_s=0.05)
    with Client(api_url, retry=policy) as c, pytest.raises(UnavailableError) as err:
        c.search("cats")
    assert index.searches == 2
    assert err.value.retriable and err.value.retry_after == 2.0  # the API's Retry-After


def test_connection_errors_are_retried_until_the_api_comes_up(
    serve: Callable[..., str], api_settings: Any, embedder: Any, index: Any, cache: Any
) -> None:
    from crossfeed.api.app import create_app

    url = serve(create_app(api_settings, embedder=embedder, index=index, cache=cache), delay=0.5)
    patient = RetryPolicy(attempts=30, wait_initial_s=0.05, wait_max_s=0.2, wait_jitter_s=0.0)
    with Client(url, retry=patient) as client:
        assert client.search("a dog running on the beach", top_k=1).results[0].id == "dogs1"


def test_suggest_tags_health_and_ready(api_url: str, cache: MemorySearchCache) -> None:
    with Client(api_url) as client:
        assert client.health() is True
        tags = client.suggest_tags(post_id="cats1", top_k=3)
        assert tags.query == "post" and tags.neighbours
        by_image = client.suggest_tags(_picture((200, 25, 25)), top_k=3)
        assert by_image.query == "image" and by_image.tags[0].tag == "art"
        assert client.ready().status == "ok"
        cache.available = False  # Redis "down": searches answer uncached, so still ready
        state = client.ready()
        assert state.status == "ok" and not state.checks["redis"].ok
        assert client.search("cats", top_k=2).degraded == ["cache"]


def test_sync_pages_cover_everything_once(api_url: str) -> None:
    with Client(api_url) as client:
        everything = [r.id for r in client.search("cats", top_k=50).results]
        paged = [r.id for r in client.iter_search("cats", page_size=3)]
        pages = list(client.search_pages("cats", page_size=3, max_pages=2))
        limited = [r.id for r in client.iter_search("cats", page_size=3, limit=4)]
    assert paged == everything and len(everything) == 8
    assert len(pages) == 2 and [len(p.results) for p in pages] == [3, 3]
    assert limited == everything[:4]


async def test_async_client_pages_and_searches_images(api_url: str) -> None:
    async with AsyncClient(api_url) as client:
        everything = [r.id for r in (await client.search("cats", top_k=50)).results]
        paged = [r.id async for r in client.iter_search("cats", page_size=2)]
        by_image = [r.id async for r in client.iter_search(image=_picture((30, 60, 230)))]
        post = await client.get_post("cats1")
        with pytest.raises(NotFoundError):
            await client.get_post("missing")
    assert paged == everything
    assert by_image[0] == "img1"
    assert post.source == "mastodon"


async def test_async_stale_cursor_when_the_index_changes(
    api_url: str, cache: MemorySearchCache
) -> None:
    async with AsyncClient(api_url) as client:
        pages = client.search_pages("cats", page_size=2)
        first = await anext(pages)
        assert first.next_cursor
        cache.bump()  # a batch was indexed between two pages
        with pytest.raises(StaleCursorError, match="first page") as err:
            await anext(pages)
        assert err.value.status == 409
        with pytest.raises(InvalidCursorError):
            await client.search("dogs", cursor=first.next_cursor)


def test_api_key_comes_from_the_environment(api_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROSSFEED_API_KEY", "s3cret-key")
    client = Client(api_url)
    try:
        assert client._http.headers["X-API-Key"] == "s3cret-key"
        assert "s3cret" not in repr(client) and "s3cret" not in repr(client._config)
    finally:
        client.close()
    monkeypatch.setenv("CROSSFEED_API_URL", api_url)
    with Client() as from_env:
        assert from_env.url == api_url and from_env.health()


def test_threads_share_one_client(api_url: str) -> None:
    errors: list[BaseException] = []
    with Client(api_url) as client:

        def work() -> None:
            try:
                for _ in range(5):
                    assert (
                        client.search("a dog running on the beach", top_k=1).results[0].id
                        == "dogs1"
                    )
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_connection_refused_is_a_clear_retriable_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with (
        Client(f"http://127.0.0.1:{port}", retry=FAST) as client,
        pytest.raises(ConnectionFailedError, match=f"127.0.0.1:{port}") as err,
    ):
        client.health()
    assert err.value.retriable and time.monotonic() - started < 5
