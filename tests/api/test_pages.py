"""Search pages (signed cursors bound to query and epoch) and the source/author filters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from crossfeed.api.cache import MemorySearchCache
from crossfeed.api.cursor import CursorCodec, Page
from crossfeed.api.exceptions import InvalidCursorError, StaleCursorError
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.indexer.memory import InMemoryIndex


def _page(client: TestClient, body: dict) -> dict:
    r = client.post("/v1/search", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _all_pages(client: TestClient, body: dict) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        out = _page(client, {**body, **({"cursor": cursor} if cursor else {})})
        pages.append([x["id"] for x in out["results"]])
        cursor = out["next_cursor"]
        if cursor is None:
            return pages


def test_pages_cover_the_ranking_once_without_repeats(client: TestClient) -> None:
    everything = [x["id"] for x in _page(client, {"text": "cute cats", "top_k": 20})["results"]]
    assert len(everything) == 8  # every post of the fixture index, once
    pages = _all_pages(client, {"text": "cute cats", "top_k": 3})
    assert [len(p) for p in pages] == [3, 3, 2]
    assert [i for p in pages for i in p] == everything


def test_page_size_may_change_between_pages(client: TestClient) -> None:
    everything = [x["id"] for x in _page(client, {"text": "cats", "top_k": 20})["results"]]
    first = _page(client, {"text": "cats", "top_k": 2})
    rest = _page(client, {"text": "cats", "top_k": 20, "cursor": first["next_cursor"]})
    assert [x["id"] for x in first["results"] + rest["results"]] == everything
    assert rest["next_cursor"] is None


def test_image_search_pages_with_the_cursor_in_the_form(
    client: TestClient, make_png: Callable[..., bytes]
) -> None:
    image = make_png((200, 30, 30))

    def page(cursor: str | None) -> dict:
        data = {"top_k": "2", **({"cursor": cursor} if cursor else {})}
        r = client.post("/v1/search", files={"file": ("a.jpg", image, "image/jpeg")}, data=data)
        assert r.status_code == 200, r.text
        return r.json()

    first = page(None)
    second = page(first["next_cursor"])
    ids = [x["id"] for x in first["results"] + second["results"]]
    assert len(ids) == len(set(ids)) == 4
    # The cursor belongs to that image: another image's search refuses it.
    other = client.post(
        "/v1/search",
        files={"file": ("b.jpg", make_png((10, 10, 240)), "image/jpeg")},
        data={"cursor": first["next_cursor"]},
    )
    assert other.status_code == 422
    assert "another query" in other.json()["error"]["message"]


def test_cursor_from_another_query_or_filters_is_refused(client: TestClient) -> None:
    cursor = _page(client, {"text": "cats", "top_k": 2})["next_cursor"]
    for body in (
        {"text": "dogs", "cursor": cursor},
        {"text": "cats", "cursor": cursor, "filters": {"lang": "en"}},
        {"post_id": "cats1", "cursor": cursor},
    ):
        r = client.post("/v1/search", json=body)
        assert r.status_code == 422, body
        err = r.json()["error"]
        assert err["type"] == "InvalidCursorError" and "another query" in err["message"]


def test_altered_or_garbage_cursor_is_a_422(client: TestClient) -> None:
    cursor = _page(client, {"text": "cats", "top_k": 2})["next_cursor"]
    head, _, sig = cursor.partition(".")
    forged = head[:-2] + ("A" if head[-2] != "A" else "B") + head[-1] + "." + sig
    for bad in (forged, "garbage", "a.b.c", "x" * 3000):
        r = client.post("/v1/search", json={"text": "cats", "cursor": bad})
        assert r.status_code == 422, bad
        assert r.json()["error"]["type"] in {"InvalidCursorError", "BadRequestError"}


def test_cursor_goes_stale_when_the_epoch_moves(
    client: TestClient, cache: MemorySearchCache
) -> None:
    first = _page(client, {"text": "cats", "top_k": 2})
    again = _page(client, {"text": "cats", "top_k": 2, "cursor": first["next_cursor"]})
    assert again["results"]  # valid at the same epoch (and cached the second time)
    cache.bump()  # the index worker accepted a batch
    r = client.post("/v1/search", json={"text": "cats", "cursor": first["next_cursor"]})
    assert r.status_code == 409
    err = r.json()["error"]
    assert err["type"] == "StaleCursorError" and "first page" in err["message"]


def test_cached_pages_equal_fresh_pages(client: TestClient) -> None:
    cold = _all_pages(client, {"text": "sofa", "top_k": 3})
    warm = _all_pages(client, {"text": "sofa", "top_k": 3})
    assert cold == warm


def test_filter_by_source_and_author(
    client: TestClient, index: InMemoryIndex, embedder: HashingEmbedder
) -> None:
    template = index.get_post("cats1")[0]
    index.upsert(
        [
            replace(
                template,
                row_id=f"{pid}:text:0",
                post_id=pid,
                source=source,
                author=author,
                vector=embedder.embed_texts([f"cats {pid}"])[0].tolist(),
            )
            for pid, source, author in (
                ("b1", "bluesky", "did:plc:alice"),
                ("b2", "bluesky", "did:plc:bob"),
                ("m1", "mastodon", "@carol@example.social"),
            )
        ]
    )

    def ids(filters: dict) -> set[str]:
        return {
            x["id"]
            for x in _page(client, {"text": "cats", "top_k": 20, "filters": filters})["results"]
        }

    assert ids({"sources": ["bluesky"]}) == {"b1", "b2"}
    assert ids({"sources": ["mastodon", "bluesky"], "authors": ["did:plc:bob"]}) == {"b2"}
    assert ids({"authors": ["@carol@example.social"]}) == {"m1"}
    hit = _page(client, {"text": "cats b1", "top_k": 1, "filters": {"sources": ["bluesky"]}})
    assert hit["results"][0]["source"] == "bluesky"
    assert hit["results"][0]["author"] == "did:plc:alice"
    post = client.get("/v1/posts/m1").json()
    assert (post["source"], post["author"]) == ("mastodon", "@carol@example.social")
    assert client.get("/v1/posts/cats1").json()["source"] is None  # indexed without one
    bad = client.post("/v1/search", json={"text": "x", "filters": {"sources": ["a\nb"]}})
    assert bad.status_code == 422


def test_codec_round_trip_and_key_separation() -> None:
    codec = CursorCodec(b"k" * 32)
    page = Page(offset=10, epoch=7, last_score=0.5, last_post_id='p"1')
    token = codec.encode(page, "fp")
    assert codec.decode(token, fingerprint="fp", epoch=7) == page
    with pytest.raises(StaleCursorError):
        codec.decode(token, fingerprint="fp", epoch=8)
    with pytest.raises(InvalidCursorError):
        codec.decode(token, fingerprint="other", epoch=7)
    with pytest.raises(InvalidCursorError):  # another API's key
        CursorCodec(b"j" * 32).decode(token, fingerprint="fp", epoch=7)
    with pytest.raises(ValueError):
        CursorCodec(b"short")


def test_short_cursor_secret_stops_startup(settings) -> None:  # type: ignore[no-untyped-def]
    from pydantic import SecretStr

    from crossfeed.api.app import create_app
    from crossfeed.exceptions import ConfigError

    settings.api.cursor_secret = SecretStr("too short")
    with pytest.raises(ConfigError, match="CROSSFEED_CURSOR_SECRET"):
        create_app(settings)


def test_paging_stops_at_the_configured_depth(
    settings, embedder: HashingEmbedder, index: InMemoryIndex, cache: MemorySearchCache
) -> None:  # type: ignore[no-untyped-def]
    from crossfeed.api.app import create_app

    settings.api.max_search_depth = 5
    app = create_app(settings, embedder=embedder, index=index, cache=cache)
    with TestClient(app) as c:
        pages = _all_pages(c, {"text": "cats", "top_k": 2})
    assert [len(p) for p in pages] == [2, 2, 1]  # 5 posts, then no next cursor
