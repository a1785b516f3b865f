"""MilvusIndex against the real Milvus at MILVUS_URI (default 127.0.0.1:19530).

Each test gets its own collection (unique name) and drops it afterwards. The
``engines`` fixture (tests/conftest.py) makes sure the engines are up.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
import pytest
from pymilvus import CollectionSchema

from crossfeed.core.settings import MilvusSettings
from crossfeed.indexer.base import IndexRow, SearchFilter
from crossfeed.indexer.exceptions import (
    IndexSchemaError,
    IndexUnavailableError,
    InvalidFilterError,
)
from crossfeed.indexer.milvus import MilvusIndex
from crossfeed.indexer.schema import TEXT_MAX_BYTES

pytestmark = pytest.mark.integration

DIM = 16


def _unit(seed: int) -> list[float]:
    v = np.random.default_rng(seed).standard_normal(DIM)
    return (v / np.linalg.norm(v)).tolist()


def _row(post: str, item: int = 0, modality: str = "text", **kw: object) -> IndexRow:
    base: dict[str, object] = dict(
        row_id=f"{post}:{modality}:{item}",
        post_id=post,
        item=item,
        modality=modality,
        vector=_unit(zlib.crc32(f"{post}:{item}".encode())),
        created_at_ms=1_700_000_000_000,
        author="alice",
        text=f"text of {post}",
        tags=("news",),
        lang="en",
        model_version="v1",
        media_ref="",
    )
    base.update(kw)
    return IndexRow(**base)  # type: ignore[arg-type]


@pytest.fixture
def index(engines: object, unique_name: Callable[[str], str]) -> Iterator[MilvusIndex]:
    settings = MilvusSettings(CROSSFEED_COLLECTION=unique_name("api_test"))
    idx = MilvusIndex(settings, consistency_level="Strong")
    idx.ensure_ready(DIM)
    yield idx
    idx.drop()
    idx.close()


def test_upsert_twice_keeps_the_count(index: MilvusIndex) -> None:
    rows = [_row(f"p{i}") for i in range(20)] + [_row("p0", 1, "image", media_ref="u")]
    assert index.upsert(rows) == 21
    assert index.count() == 21
    assert index.upsert(rows) == 21
    assert index.count() == 21


def test_upsert_replaces_fields(index: MilvusIndex) -> None:
    index.upsert([_row("p", text="old")])
    index.upsert([_row("p", text="new", tags=("a", "b"))])
    [stored] = index.get_post("p")
    assert stored.text == "new"
    assert list(stored.tags) == ["a", "b"]
    assert len(stored.vector) == DIM


def test_text_is_truncated_to_the_byte_limit(index: MilvusIndex) -> None:
    index.upsert([_row("p", text="ü" * TEXT_MAX_BYTES)])  # 2 bytes each: twice the limit
    [stored] = index.get_post("p")
    assert len(stored.text.encode()) == TEXT_MAX_BYTES
    assert set(stored.text) == {"ü"}


def test_filtered_search(index: MilvusIndex) -> None:
    target = _unit(99)
    index.upsert(
        [
            _row("text_en", vector=target, created_at_ms=2_000, tags=("cats", "pets")),
            _row("img", 1, "image", vector=target, created_at_ms=2_000, media_ref="u"),
            _row("old", vector=target, created_at_ms=500, tags=("cats",)),
            _row("late", vector=target, created_at_ms=3_000, tags=("cats",)),
            _row("fr", vector=target, created_at_ms=2_000, lang="fr", tags=("cats",)),
            _row("v2", vector=target, created_at_ms=2_000, model_version="v2", tags=("cats",)),
            _row("dogs", vector=target, created_at_ms=2_000, tags=("dogs",)),
        ]
    )

    def ids(flt: SearchFilter) -> set[str]:
        return {h.row.post_id for h in index.search(target, 20, flt)}

    assert ids(SearchFilter(modalities=("image",))) == {"img"}
    assert ids(SearchFilter(since_ms=1_000, until_ms=3_000, model_version="v1")) == {
        "text_en",
        "img",
        "fr",
        "dogs",
    }
    assert ids(SearchFilter(tags=("pets", "dogs"))) == {"text_en", "dogs"}
    assert ids(SearchFilter(lang="fr")) == {"fr"}
    assert ids(SearchFilter(model_version="v2")) == {"v2"}
    assert "text_en" not in ids(SearchFilter(exclude_post_ids=("text_en",)))
    hits = index.search(target, 3, SearchFilter(modalities=("text",)))
    assert len(hits) == 3
    assert hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert hits[0].row.vector == []


HOSTILE = ('a"b', "back\\slash", 'x"] or true or tags["', '\\"', "it's", "\\", 'x") or (1 == 1')


def test_source_and_author_are_stored_and_filter(index: MilvusIndex) -> None:
    target = _unit(7)
    index.upsert(
        [
            _row("bsky", vector=target, source="bluesky", author="did:plc:abc"),
            _row("masto", vector=target, source="mastodon", author="@bob@example.social"),
            _row("quote", vector=target, source="mastodon", author='@ev"il'),
        ]
    )

    def ids(flt: SearchFilter) -> set[str]:
        return {h.row.post_id for h in index.search(target, 20, flt)}

    assert ids(SearchFilter(sources=("bluesky",))) == {"bsky"}
    assert ids(SearchFilter(sources=("mastodon",))) == {"masto", "quote"}
    assert ids(SearchFilter(authors=('@ev"il', "did:plc:abc"))) == {"bsky", "quote"}
    assert ids(SearchFilter(sources=("bluesky",), authors=("@bob@example.social",))) == set()
    [stored] = index.get_post("bsky")
    assert (stored.source, stored.author) == ("bluesky", "did:plc:abc")


def test_hostile_values_are_matched_literally_and_cannot_inject(index: MilvusIndex) -> None:
    rows = [_row(f"t{i}", tags=(tag,)) for i, tag in enumerate(HOSTILE)]
    index.upsert([*rows, _row("bystander", tags=("plain",))])
    for i, tag in enumerate(HOSTILE):
        hits = index.search(_unit(1), 20, SearchFilter(tags=(tag,)))
        assert [h.row.post_id for h in hits] == [f"t{i}"], tag
        assert list(hits[0].row.tags) == [tag]
        # The same characters as a lang value are a value too: nothing matches.
        assert index.search(_unit(1), 20, SearchFilter(lang=tag)) == []
    # ... and as post ids (look-up and exclusion).
    index.upsert([_row(tag) for tag in HOSTILE])
    for tag in HOSTILE:
        assert [r.post_id for r in index.get_post(tag)] == [tag]
    everything = {h.row.post_id for h in index.search(_unit(1), 50, SearchFilter())}
    kept = {
        h.row.post_id for h in index.search(_unit(1), 50, SearchFilter(exclude_post_ids=HOSTILE))
    }
    assert kept == everything - set(HOSTILE)


def test_dimension_mismatch_is_a_clear_error(index: MilvusIndex) -> None:
    other = MilvusIndex(MilvusSettings(CROSSFEED_COLLECTION=index.collection))
    try:
        with pytest.raises(IndexSchemaError, match=f"stores {DIM}-dimensional"):
            other.ensure_ready(DIM * 2)
        assert not IndexSchemaError("x").retriable
    finally:
        other.close()


def test_reopening_reloads_and_serves(index: MilvusIndex) -> None:
    index.upsert([_row("p")])
    index.close()  # drop the connection; the next call reconnects and loads first
    assert [r.post_id for r in index.get_post("p")] == ["p"]
    assert index.search(_unit(3), 1, SearchFilter())[0].row.post_id == "p"


def test_unreachable_server_is_a_retriable_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    idx = MilvusIndex(MilvusSettings(MILVUS_URI=f"http://127.0.0.1:{port}"), timeout_s=1.0)
    assert idx.ping() is False
    with pytest.raises(IndexUnavailableError) as info:
        idx.ensure_ready(DIM)
    assert info.value.retriable


def test_suggested_tags_are_stored_apart_from_tags(index: MilvusIndex) -> None:
    index.upsert([_row("p", 1, "image", tags=(), suggested_tags=("sunset", "sky"))])
    [stored] = index.get_post("p")
    assert list(stored.tags) == [] and list(stored.suggested_tags) == ["sunset", "sky"]
    [hit] = index.search(_row("p", 1, "image").vector, 1, SearchFilter())
    assert list(hit.row.suggested_tags) == ["sunset", "sky"]
    # A tag filter matches the author's tags only, never machine suggestions.
    assert index.search(_row("p", 1, "image").vector, 1, SearchFilter(tags=("sunset",))) == []


def test_video_moments_keep_their_spans(index: MilvusIndex) -> None:
    whole = _row("v", 1, "video")
    moments = [
        replace(
            _row("v", 1, "video", moment=k, start_ms=4000 * k, end_ms=4000 * (k + 1)),
            row_id=f"v:video:1:m{k}",
            vector=_unit(100 + k),
        )
        for k in range(3)
    ]
    assert index.upsert([whole, *moments]) == 4
    stored = {r.row_id: r for r in index.get_post("v")}
    assert stored["v:video:1"].moment is None and stored["v:video:1"].start_ms is None
    assert (stored["v:video:1:m2"].moment, stored["v:video:1:m2"].end_ms) == (2, 12000)
    [hit] = index.search(_unit(101), 1, SearchFilter(modalities=("video",)))
    assert (hit.row.row_id, hit.row.start_ms, hit.row.end_ms) == ("v:video:1:m1", 4000, 8000)


def test_collection_from_before_suggested_tags_still_serves(
    engines: object, unique_name: Callable[[str], str]
) -> None:
    """A collection created by an older release (no suggested_tags field) keeps working."""
    settings = MilvusSettings(CROSSFEED_COLLECTION=unique_name("old_schema"))
    old = MilvusIndex(settings, consistency_level="Strong")
    today = old._schema(DIM)
    newer = {"suggested_tags", "moment", "start_ms", "end_ms", "source"}
    schema = CollectionSchema(
        [f for f in today.fields if f.name not in newer], enable_dynamic_field=False
    )
    client = old._connect()
    try:
        client.create_collection(
            settings.collection,
            schema=schema,
            index_params=old._index_params(),
        )
        index = MilvusIndex(settings, consistency_level="Strong")
        index.ensure_ready(DIM)
        row = _row("p", 1, "image", suggested_tags=("sunset",))
        moment = _row("v", 1, "video", moment=0, start_ms=0, end_ms=4000)
        moment = replace(moment, row_id=moment.row_id + ":m0")
        assert index.upsert([row, moment]) == 1  # the moment cannot be told apart: not stored
        [stored] = index.get_post("p")
        assert list(stored.suggested_tags) == []  # not stored, and nothing failed
        assert index.get_post("v") == []
        assert index.search(row.vector, 1, SearchFilter())[0].row.post_id == "p"
        # Authors were always stored, so they filter; a source filter asks for a re-index.
        assert index.search(row.vector, 1, SearchFilter(authors=("alice",)))[0].row.post_id == "p"
        with pytest.raises(InvalidFilterError, match="reindex"):
            index.search(row.vector, 1, SearchFilter(sources=("bluesky",)))
        index.close()
    finally:
        client.drop_collection(settings.collection)
        client.close()
        old.close()
