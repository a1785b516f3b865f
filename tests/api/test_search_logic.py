"""Pure search helpers: per-post dedupe, oversampling, cache keys, post query rows."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from crossfeed.api.cache import cache_key, normalize_text_query
from crossfeed.api.models import SearchFilters
from crossfeed.indexer.base import Hit, IndexRow, SearchFilter
from crossfeed.indexer.memory import InMemoryIndex
from crossfeed.retrieval.exceptions import ModelVersionMismatchError, PostNotIndexedError
from crossfeed.retrieval.hits import ROWS_PER_POST, best_per_post, collect_hits, query_row_for_post


def _row(post: str, item: int = 0, modality: str = "text", version: str = "v1") -> IndexRow:
    return IndexRow(
        row_id=f"{post}:{modality}:{item}",
        post_id=post,
        item=item,
        modality=modality,
        vector=[1.0, 0.0],
        created_at_ms=0,
        author="",
        text="",
        tags=(),
        lang="",
        model_version=version,
        media_ref="",
    )


def _hit(post: str, score: float, item: int = 0) -> Hit:
    return Hit(row=_row(post, item, "text" if item == 0 else "image"), score=score)


def test_best_per_post_keeps_each_posts_best_item() -> None:
    hits = [_hit("a", 0.5, 1), _hit("b", 0.8), _hit("a", 0.9, 2), _hit("c", 0.1), _hit("b", 0.7, 1)]
    best = best_per_post(hits, 10)
    assert [(h.row.post_id, h.row.item, h.score) for h in best] == [
        ("a", 2, 0.9),
        ("b", 0, 0.8),
        ("c", 0, 0.1),
    ]
    assert [h.row.post_id for h in best_per_post(hits, 2)] == ["a", "b"]


def test_best_per_post_ties_prefer_lower_item() -> None:
    best = best_per_post([_hit("a", 0.5, 3), _hit("a", 0.5, 0)], 1)
    assert best[0].row.item == 0


class _RecordingIndex(InMemoryIndex):
    def __init__(self) -> None:
        super().__init__(dim=2)
        self.fetches: list[int] = []

    def search(self, vector: Sequence[float], top_k: int, flt: SearchFilter) -> list[Hit]:
        self.fetches.append(top_k)
        return super().search(vector, top_k, flt)


def test_collect_hits_refetches_when_posts_have_many_items() -> None:
    index = _RecordingIndex()
    # Post "big" has 9 identical items that crowd out the others at 3 rows per post.
    rows = [_row("big", i, "text" if i == 0 else "image") for i in range(ROWS_PER_POST)]
    rows += [_row(f"p{i}") for i in range(3)]
    index.upsert(rows)
    hits = collect_hits(index, [1.0, 0.0], 2, SearchFilter())
    assert len({h.row.post_id for h in hits}) == 2
    assert index.fetches == [6, 2 * ROWS_PER_POST]


def test_collect_hits_single_fetch_when_enough_posts() -> None:
    index = _RecordingIndex()
    index.upsert([_row(f"p{i}") for i in range(10)])
    assert len(collect_hits(index, [1.0, 0.0], 3, SearchFilter())) == 3
    assert index.fetches == [9]


def test_query_row_prefers_text_of_the_serving_model() -> None:
    rows = [_row("p", 1, "image"), _row("p", 0, "text"), _row("p", 2, "image")]
    assert query_row_for_post(rows, "p", "v1").modality == "text"
    assert query_row_for_post(rows[::2], "p", "v1").item == 1
    mixed = [_row("p", 0, "text", version="v0"), _row("p", 1, "image")]
    assert query_row_for_post(mixed, "p", "v1").item == 1


def test_query_row_errors() -> None:
    with pytest.raises(PostNotIndexedError):
        query_row_for_post([], "p", "v1")
    with pytest.raises(ModelVersionMismatchError):
        query_row_for_post([_row("p", version="v0")], "p", "v1")


def test_normalize_text_query() -> None:
    assert normalize_text_query("  Red\tCAR\n now ") == "red car now"


def test_cache_key_depends_on_everything_that_shapes_results() -> None:
    base = dict(
        kind="text",
        query="red car",
        filters=SearchFilters(tags=["b", "a"]).canonical(),
        top_k=5,
        epoch=3,
        model_version="v1",
    )
    key = cache_key("pfx", **base)  # type: ignore[arg-type]
    assert key.startswith("pfx:search:v2:")
    # Filter order does not matter.
    same = {**base, "filters": SearchFilters(tags=["a", "b", "#A"]).canonical()}
    assert cache_key("pfx", **same) == key  # type: ignore[arg-type]
    for field, value in [
        ("kind", "post"),
        ("query", "red cars"),
        ("filters", SearchFilters(lang="en").canonical()),
        ("top_k", 6),
        ("epoch", 4),
        ("model_version", "v2"),
    ]:
        assert cache_key("pfx", **{**base, field: value}) != key, field  # type: ignore[arg-type]
