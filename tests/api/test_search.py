"""POST /v1/search over fakes: ranking, filters, dedupe, cache behaviour, input errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from crossfeed.api.app import create_app
from crossfeed.api.cache import MemorySearchCache
from crossfeed.core.settings import Settings
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.indexer.memory import InMemoryIndex


def _ids(body: dict) -> list[str]:
    return [r["id"] for r in body["results"]]


def test_text_search_ranks_the_matching_post_first(client: TestClient) -> None:
    r = client.post("/v1/search", json={"text": "cats sleeping on a sofa", "top_k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["results"][0]["id"] == "cats1"
    assert len(body["results"]) == 3
    first = body["results"][0]
    assert first["modality"] == "text"
    assert first["tags"] == ["cats", "pets"]
    assert first["created_at"].startswith("2024-05-02T00:00:00")
    assert body["cached"] is False
    assert body["query"] == "text"
    assert body["model_version"] == "hashing-v0"
    scores = [x["score"] for x in body["results"]]
    assert scores == sorted(scores, reverse=True)


def test_results_are_deduplicated_per_post(
    client: TestClient, make_png: Callable[..., bytes]
) -> None:
    # grass1 has two near-identical green images; it must appear once.
    r = client.post(
        "/v1/search",
        files={"file": ("g.png", make_png((22, 195, 35)), "image/png")},
        data={"top_k": "5"},
    )
    assert r.status_code == 200, r.text
    ids = _ids(r.json())
    assert ids[0] == "grass1"
    assert len(ids) == len(set(ids))
    assert r.json()["results"][0]["media_ref"].startswith("https://example.org/grass1/")


def test_filters_modality_time_tags_lang(client: TestClient) -> None:
    def search(filters: dict) -> list[str]:
        r = client.post("/v1/search", json={"text": "cats", "top_k": 20, "filters": filters})
        assert r.status_code == 200, r.text
        return _ids(r.json())

    assert set(search({"modalities": ["image"]})) == {"cars1", "sky1", "grass1"}
    assert set(search({"lang": "fr"})) == {"chats"}
    # Filter tags are normalised like the stream normalises stored hashtags.
    assert set(search({"tags": ["#Dogs"]})) == {"dogs1"}
    assert set(search({"tags": ["#SunsetBeach"]})) == {"dogs1"}
    window = search({"since": "2024-05-03T00:00:00Z", "until": "2024-05-05T00:00:00Z"})
    assert set(window) == {"dogs1", "chats"}  # until is exclusive: cats2 (May 5) is out
    assert set(search({"tags": ["cats"], "lang": "en", "modalities": ["text"]})) == {
        "cats1",
        "cats2",
    }


def test_post_id_query_uses_stored_vector_and_excludes_itself(
    client: TestClient, embedder: HashingEmbedder
) -> None:
    before = embedder.calls["text"]
    r = client.post("/v1/search", json={"post_id": "cats1", "top_k": 5})
    assert r.status_code == 200, r.text
    ids = _ids(r.json())
    assert "cats1" not in ids
    assert ids[0] == "cats3"  # the near-duplicate text
    assert r.json()["query"] == "post"
    assert embedder.calls["text"] == before  # stored vector, no re-embedding


def test_post_id_query_unknown_post_is_404(client: TestClient) -> None:
    r = client.post("/v1/search", json={"post_id": "nope"})
    assert r.status_code == 404
    assert "nope" in r.json()["error"]["message"]


def test_post_id_of_another_model_version_is_409(
    client: TestClient, index: InMemoryIndex, embedder: HashingEmbedder
) -> None:
    from dataclasses import replace

    [row] = index.get_post("dogs1")
    index.upsert([replace(row, model_version="old-model")])
    r = client.post("/v1/search", json={"post_id": "dogs1"})
    assert r.status_code == 409
    assert "old-model" in r.json()["error"]["message"]


def test_repeated_query_is_served_from_cache_without_encoder_or_index(
    client: TestClient, embedder: HashingEmbedder, index: InMemoryIndex
) -> None:
    first = client.post("/v1/search", json={"text": "Red sports car", "top_k": 4}).json()
    calls_text, calls_search = embedder.calls["text"], index.calls["search"]
    # Same query after normalisation (case, whitespace) and same filters.
    again = client.post("/v1/search", json={"text": "  red   SPORTS\ncar ", "top_k": 4}).json()
    assert first["cached"] is False and again["cached"] is True
    assert again["results"] == first["results"]
    assert again["epoch"] == first["epoch"]
    assert embedder.calls["text"] == calls_text
    assert index.calls["search"] == calls_search
    # Another top_k is another query.
    other = client.post("/v1/search", json={"text": "red sports car", "top_k": 3}).json()
    assert other["cached"] is False


def test_image_cache_hit_skips_decoding_and_encoding(
    client: TestClient,
    embedder: HashingEmbedder,
    index: InMemoryIndex,
    make_png: Callable[..., bytes],
) -> None:
    files = {"file": ("r.png", make_png((210, 30, 25)), "image/png")}
    first = client.post("/v1/search", files=files).json()
    calls_image, calls_search = embedder.calls["image"], index.calls["search"]
    again = client.post("/v1/search", files=files).json()
    assert (first["cached"], again["cached"]) == (False, True)
    assert first["results"][0]["id"] == "cars1"
    assert (embedder.calls["image"], index.calls["search"]) == (calls_image, calls_search)


def test_epoch_bump_invalidates_cached_results(
    client: TestClient, cache: MemorySearchCache, index: InMemoryIndex
) -> None:
    q = {"text": "dog on the beach", "top_k": 2}
    first = client.post("/v1/search", json=q).json()
    assert client.post("/v1/search", json=q).json()["cached"] is True
    cache.bump()
    searches = index.calls["search"]
    after = client.post("/v1/search", json=q).json()
    assert after["cached"] is False
    assert after["epoch"] == first["epoch"] + 1
    assert index.calls["search"] > searches


def test_cache_outage_degrades_to_uncached(client: TestClient, cache: MemorySearchCache) -> None:
    cache.available = False
    q = {"text": "cats", "top_k": 2}
    for _ in range(2):
        r = client.post("/v1/search", json=q)
        assert r.status_code == 200
        assert r.json()["cached"] is False
        assert r.json()["epoch"] is None


def test_image_upload_with_filters_and_top_k(
    client: TestClient, make_png: Callable[..., bytes]
) -> None:
    r = client.post(
        "/v1/search",
        files={"file": ("b.png", make_png((30, 60, 230), fmt="PNG"), "image/png")},
        data={"filters": json.dumps({"modalities": ["image"]}), "top_k": "2"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == "image"
    assert _ids(body)[0] == "sky1"
    assert len(body["results"]) == 2
    assert all(x["modality"] == "image" for x in body["results"])


def test_time_filter_bounds_by_created_at(client: TestClient) -> None:
    r = client.post(
        "/v1/search",
        json={"text": "anything", "top_k": 20, "filters": {"since": "2024-05-07T00:00:00+00:00"}},
    )
    created = {x["id"]: x["created_at"] for x in r.json()["results"]}
    assert set(created) == {"sky1", "grass1"}
    assert all(value >= "2024-05-07T00:00:00" for value in created.values())


# --------------------------------------------------------------------- bad input


def _error(r) -> dict:  # type: ignore[no-untyped-def]
    return r.json()["error"]


def test_both_text_and_post_id_is_422(client: TestClient) -> None:
    r = client.post("/v1/search", json={"text": "a", "post_id": "b"})
    assert r.status_code == 422
    assert "exactly one" in json.dumps(_error(r))


def test_neither_text_nor_post_id_is_422(client: TestClient) -> None:
    assert client.post("/v1/search", json={"top_k": 3}).status_code == 422


def test_top_k_bounds(client: TestClient) -> None:
    assert client.post("/v1/search", json={"text": "a", "top_k": 0}).status_code == 422
    r = client.post("/v1/search", json={"text": "a", "top_k": 21})
    assert r.status_code == 422
    assert "between 1 and 20" in _error(r)["message"]


def test_unknown_filter_field_is_422(client: TestClient) -> None:
    r = client.post("/v1/search", json={"text": "a", "filters": {"modality": ["text"]}})
    assert r.status_code == 422


def test_bad_filter_values_are_422(client: TestClient) -> None:
    for filters in (
        {"modalities": ["audio"]},
        {"since": "yesterday"},
        {"since": "2024-05-05T00:00:00Z", "until": "2024-05-01T00:00:00Z"},
        {"lang": "en; drop"},
        {"tags": ["ok", "bad\nline"]},
        {"tags": ["#"]},
    ):
        r = client.post("/v1/search", json={"text": "a", "filters": filters})
        assert r.status_code == 422, filters


def test_hostile_tag_is_only_a_value(client: TestClient) -> None:
    r = client.post(
        "/v1/search",
        json={"text": "cats", "filters": {"tags": ['cats"] or true or ["']}},
    )
    assert r.status_code == 200
    assert r.json()["results"] == []


def test_invalid_json_is_422(client: TestClient) -> None:
    r = client.post(
        "/v1/search", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert "JSON" in _error(r)["message"]


def test_unsupported_content_type_is_415(client: TestClient) -> None:
    r = client.post("/v1/search", content=b"text=cats", headers={"content-type": "text/plain"})
    assert r.status_code == 415


def test_oversized_upload_is_413(client: TestClient) -> None:
    r = client.post("/v1/search", files={"file": ("big.png", b"\x89PNG" + b"0" * 300_000)})
    assert r.status_code == 413


def test_undecodable_image_is_422(client: TestClient, embedder: HashingEmbedder) -> None:
    before = embedder.calls["image"]
    r = client.post("/v1/search", files={"file": ("x.png", b"definitely not an image")})
    assert r.status_code == 422
    assert _error(r)["type"] == "MediaDecodeError"
    assert embedder.calls["image"] == before


def test_image_over_the_pixel_limit_is_422(
    settings: Settings,
    embedder: HashingEmbedder,
    index: InMemoryIndex,
    cache: MemorySearchCache,
    make_png: Callable[..., bytes],
) -> None:
    settings.encoder.max_image_pixels = 100
    with TestClient(create_app(settings, embedder=embedder, index=index, cache=cache)) as c:
        r = c.post("/v1/search", files={"file": ("x.png", make_png((1, 2, 3), size=32))})
    assert r.status_code == 422
    assert "pixel" in _error(r)["message"]


def test_upload_without_file_part_is_422(
    client: TestClient, make_png: Callable[..., bytes]
) -> None:
    r = client.post("/v1/search", files={"other": ("x.png", make_png((1, 2, 3)))})
    assert r.status_code == 422


def test_upload_with_bad_filters_json_is_422(
    client: TestClient, make_png: Callable[..., bytes]
) -> None:
    r = client.post(
        "/v1/search",
        files={"file": ("x.png", make_png((1, 2, 3)))},
        data={"filters": "{oops"},
    )
    assert r.status_code == 422


def test_upload_with_non_integer_top_k_is_422(
    client: TestClient, make_png: Callable[..., bytes]
) -> None:
    r = client.post(
        "/v1/search", files={"file": ("x.png", make_png((1, 2, 3)))}, data={"top_k": "many"}
    )
    assert r.status_code == 422


def test_an_uploaded_image_is_hashed_off_the_event_loop(
    client: TestClient, make_png: Callable[..., bytes], monkeypatch: Any
) -> None:
    """Hashing an upload of up to 10 MiB on the event loop would stall every request."""
    import asyncio
    import hashlib

    import crossfeed.api.search as search_mod

    on_loop: list[bool] = []

    class RecordingHashlib:
        @staticmethod
        def sha256(data: bytes = b"") -> Any:
            on_loop.append(asyncio._get_running_loop() is not None)
            return hashlib.sha256(data)

    monkeypatch.setattr(search_mod, "hashlib", RecordingHashlib)
    files = {"file": ("r.png", make_png((210, 30, 25)), "image/png")}
    assert client.post("/v1/search", files=files).status_code == 200
    assert on_loop and not any(on_loop)
