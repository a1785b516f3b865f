"""InMemoryIndex: the reference semantics the API's unit tests rely on."""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest

from crossfeed.indexer.base import IndexRow, SearchFilter
from crossfeed.indexer.exceptions import (
    IndexNotReadyError,
    IndexSchemaError,
    InvalidFilterError,
    InvalidRowError,
)
from crossfeed.indexer.memory import InMemoryIndex
from crossfeed.indexer.schema import TEXT_MAX_BYTES, truncate_utf8

DIM = 8


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
        created_at_ms=1_000,
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
def index() -> InMemoryIndex:
    idx = InMemoryIndex()
    idx.ensure_ready(DIM)
    return idx


def test_requires_ensure_ready() -> None:
    with pytest.raises(IndexNotReadyError):
        InMemoryIndex().upsert([_row("p")])


def test_dimension_mismatch_is_a_schema_error(index: InMemoryIndex) -> None:
    with pytest.raises(IndexSchemaError, match="dimension"):
        index.ensure_ready(DIM + 1)


def test_upsert_is_idempotent(index: InMemoryIndex) -> None:
    rows = [_row(f"p{i}") for i in range(5)]
    assert index.upsert(rows) == 5
    assert index.upsert(rows) == 5
    assert index.count() == 5


def test_upsert_replaces_by_row_id(index: InMemoryIndex) -> None:
    index.upsert([_row("p", text="old")])
    index.upsert([_row("p", text="new")])
    [stored] = index.get_post("p")
    assert stored.text == "new"


def test_wrong_dimension_row_is_refused_and_batch_untouched(index: InMemoryIndex) -> None:
    with pytest.raises(InvalidRowError, match="dimensions"):
        index.upsert([_row("ok"), _row("bad", vector=[1.0, 0.0])])
    assert index.count() == 0


def test_nan_vector_is_refused(index: InMemoryIndex) -> None:
    with pytest.raises(InvalidRowError, match="NaN"):
        index.upsert([_row("p", vector=[float("nan")] * DIM)])


def test_text_is_cut_on_a_character_boundary(index: InMemoryIndex) -> None:
    long_text = "€" * TEXT_MAX_BYTES  # 3 bytes each
    index.upsert([_row("p", text=long_text)])
    [stored] = index.get_post("p")
    assert stored.text == truncate_utf8(long_text, TEXT_MAX_BYTES)
    assert len(stored.text.encode()) <= TEXT_MAX_BYTES
    assert len(stored.text.encode()) > TEXT_MAX_BYTES - 3


def test_search_ranks_by_cosine_and_filters(index: InMemoryIndex) -> None:
    target = _unit(42)
    index.upsert(
        [
            _row("exact", vector=target),
            _row("img", modality="image", item=1, vector=target, media_ref="u"),
            _row("other", vector=_unit(7)),
            _row("old", vector=target, created_at_ms=10),
            _row("fr", vector=target, lang="fr"),
        ]
    )
    hits = index.search(target, 10, SearchFilter(modalities=("text",), since_ms=100, lang="en"))
    ids = [h.row.post_id for h in hits]
    assert ids[0] == "exact"
    assert "img" not in ids and "old" not in ids and "fr" not in ids
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert all(a.score >= b.score for a, b in itertools.pairwise(hits))
    assert hits[0].row.vector == ()


def test_search_excludes_posts_and_honours_top_k(index: InMemoryIndex) -> None:
    index.upsert([_row(f"p{i}") for i in range(6)])
    hits = index.search(_unit(1), 3, SearchFilter(exclude_post_ids=("p0", "p1")))
    assert len(hits) == 3
    assert not {"p0", "p1"} & {h.row.post_id for h in hits}


def test_hostile_tag_matches_only_itself(index: InMemoryIndex) -> None:
    hostile = 'x"] or true or ["'
    index.upsert([_row("a", tags=(hostile,)), _row("b", tags=("x",))])
    hits = index.search(_unit(1), 10, SearchFilter(tags=(hostile,)))
    assert [h.row.post_id for h in hits] == ["a"]


def test_bad_filter_raises(index: InMemoryIndex) -> None:
    with pytest.raises(InvalidFilterError):
        index.search(_unit(1), 5, SearchFilter(modalities=("sound",)))


def test_get_post_sorted_by_item_with_vectors(index: InMemoryIndex) -> None:
    index.upsert([_row("p", item=2, modality="image"), _row("p", item=0), _row("q")])
    rows = index.get_post("p")
    assert [r.item for r in rows] == [0, 2]
    assert all(len(r.vector) == DIM for r in rows)
    assert index.get_post("missing") == []


def test_source_and_author_filters_any_of(index: InMemoryIndex) -> None:
    index.upsert(
        [
            _row("b1", source="bluesky", author="did:plc:one"),
            _row("b2", source="bluesky", author="did:plc:two"),
            _row("m1", source="mastodon", author="@ann@example.social"),
            _row("old"),  # indexed before sources were stored
        ]
    )

    def ids(flt: SearchFilter) -> set[str]:
        return {h.row.post_id for h in index.search(_unit(1), 10, flt)}

    assert ids(SearchFilter(sources=("bluesky",))) == {"b1", "b2"}
    assert ids(SearchFilter(sources=("bluesky", "mastodon"))) == {"b1", "b2", "m1"}
    assert ids(SearchFilter(authors=("did:plc:two", "@ann@example.social"))) == {"b2", "m1"}
    assert ids(SearchFilter(sources=("mastodon",), authors=("did:plc:one",))) == set()
    assert index.get_post("b1")[0].source == "bluesky"
    assert index.get_post("old")[0].source == ""
