"""Tag voting over neighbours, and suggestions straight from an index."""

from __future__ import annotations

import numpy as np
import pytest

from crossfeed.exceptions import InvalidInputError
from crossfeed.indexer.base import Hit, IndexRow
from crossfeed.indexer.memory import InMemoryIndex
from crossfeed.retrieval import suggest as serving
from crossfeed.retrieval.suggest import (
    Neighbour,
    TagSuggestion,
    VoteConfig,
    emitted_tags,
    neighbours_from_hits,
    precision_at_k,
    serving_suggestions,
    suggest_tags_for_media,
    suggest_tags_for_vector,
    vote_tags,
)


def _row(post: str, item: int, vector: list[float], tags: tuple[str, ...], version: str = "v"):
    return IndexRow(
        row_id=f"{post}:{'text' if item == 0 else 'image'}:{item}",
        post_id=post,
        item=item,
        modality="text" if item == 0 else "image",
        vector=vector,
        created_at_ms=0,
        author="a",
        text="",
        tags=tags,
        lang="en",
        model_version=version,
        media_ref="",
    )


def test_close_neighbours_outvote_many_far_ones() -> None:
    near = [Neighbour("a", 0.95, ("cat",)), Neighbour("b", 0.94, ("cat", "pets"))]
    far = [Neighbour(f"f{i}", 0.60, ("dog",)) for i in range(10)]
    out = vote_tags(near + far, config=VoteConfig(temperature=0.05), top_k=3)
    assert [s.tag for s in out] == ["cat", "pets", "dog"]
    assert out[0].support == 2 and 0.9 < out[0].score <= 1.0
    # With a flat weighting the ten far neighbours win instead.
    flat = vote_tags(near + far, config=VoteConfig(temperature=100.0), top_k=1)
    assert flat[0].tag == "dog"


def test_untagged_neighbours_abstain_and_filters_apply() -> None:
    hits = [Neighbour("a", 0.9, ()), Neighbour("b", 0.8, ("cat", "tbt", "typo"))]
    out = vote_tags(hits, allowed={"cat", "tbt"}, exclude={"tbt"})
    assert [(s.tag, s.score) for s in out] == [("cat", pytest.approx(1.0))]


def test_posterior_mix_and_posterior_alone() -> None:
    hits = [Neighbour("a", 0.9, ("cat",))]
    cfg = VoteConfig(posterior_mix=0.5)
    out = vote_tags(hits, config=cfg, posterior={"cat": 0.2, "kitten": 0.9})
    assert [s.tag for s in out] == ["cat", "kitten"]
    assert out[0].score == pytest.approx(0.6) and out[1].score == pytest.approx(0.45)
    alone = vote_tags([], config=VoteConfig(posterior_mix=0.0), posterior={"kitten": 0.9})
    assert [(s.tag, s.score) for s in alone] == [("kitten", pytest.approx(0.9))]
    assert vote_tags([]) == []


def test_hits_are_merged_per_post_at_their_best_score() -> None:
    hits = [
        Hit(_row("p1", 1, [], ("cat",)), 0.5),
        Hit(_row("p2", 0, [], ("dog",)), 0.7),
        Hit(_row("p1", 0, [], ("pets",)), 0.9),
    ]
    out = neighbours_from_hits(hits, limit=5)
    assert [(n.post_id, n.score) for n in out] == [("p1", 0.9), ("p2", 0.7)]
    assert set(out[0].tags) == {"cat", "pets"}
    assert len(neighbours_from_hits(hits, limit=1)) == 1


def test_suggest_from_an_index_uses_only_the_serving_version() -> None:
    index = InMemoryIndex()
    index.ensure_ready(2)
    index.upsert(
        [
            _row("cat1", 1, [1.0, 0.0], ("cat",)),
            _row("cat2", 1, [0.98, 0.2], ("cat", "pets")),
            _row("dog1", 1, [0.0, 1.0], ("dog",)),
            _row("old", 1, [1.0, 0.0], ("stale",), version="old"),
        ]
    )
    query = (np.array([1.0, 0.05]) / np.linalg.norm([1.0, 0.05])).tolist()
    out, neighbours = suggest_tags_for_vector(
        index, query, model_version="v", config=VoteConfig(neighbours=3), top_k=2
    )
    assert [s.tag for s in out] == ["cat", "pets"]
    assert "old" not in {n.post_id for n in neighbours}
    out, _ = suggest_tags_for_vector(index, query, model_version="v", exclude_post_ids=["cat1"])
    assert out[0].tag in {"cat", "pets"} and all(s.tag != "stale" for s in out)


def test_precision_at_k_skips_items_without_truth() -> None:
    assert precision_at_k([["a", "b"], ["x"], ["c"]], [{"a"}, set(), {"z"}], k=2) == 0.25
    with pytest.raises(InvalidInputError):
        precision_at_k([["a"]], [], k=5)
    with pytest.raises(InvalidInputError):
        VoteConfig(neighbours=0)


def test_the_serving_recipe_mixes_the_posterior_and_keeps_to_its_vocabulary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    near = [Neighbour("a", 0.9, ("cat", "typo")), Neighbour("b", 0.1, ("dog",))]
    votes = serving_suggestions(near, None, top_k=5)
    assert [s.tag for s in votes][:2] == ["cat", "typo"]  # no head vocabulary: any tag
    assert serving_suggestions(near, {}, top_k=5) == votes  # an empty posterior is none
    mixed = serving_suggestions(near, {"cat": 0.2, "kitten": 0.8}, top_k=5)
    scores = {s.tag: s.score for s in mixed}
    assert set(scores) == {"cat", "kitten"}  # the typo and the far dog are out of vocabulary
    assert scores["cat"] == pytest.approx(0.5 * 1.0 + 0.5 * 0.2, abs=1e-6)
    assert scores["kitten"] == pytest.approx(0.5 * 0.8)
    # The mix is read when called, so every caller follows a change of it.
    monkeypatch.setattr(serving, "POSTERIOR_MIX", 1.0)
    assert [s.tag for s in serving_suggestions(near, {"cat": 0.2, "kitten": 0.8})] == [
        "kitten",
        "cat",
    ]
    assert len(serving_suggestions(near, None, limit=1)) == 2  # only "a" votes
    with pytest.raises(InvalidInputError):
        serving_suggestions(near, None, limit=0)


@pytest.mark.parametrize("posterior", [None, {"cat": 0.3, "pets": 0.6, "kitten": 0.1}])
def test_media_suggestions_are_the_recipe_over_the_index_neighbours(
    posterior: dict[str, float] | None,
) -> None:
    index = InMemoryIndex()
    index.ensure_ready(2)
    index.upsert(
        [
            _row("cat1", 1, [1.0, 0.0], ("cat", "typo")),
            _row("cat2", 1, [0.98, 0.2], ("cat", "pets")),
            _row("cat2", 0, [0.9, 0.4], ("cat", "pets")),
            _row("dog1", 1, [0.0, 1.0], ("dog",)),
            _row("me", 1, [1.0, 0.05], ("self",)),
        ]
    )
    query = (np.array([1.0, 0.05]) / np.linalg.norm([1.0, 0.05])).tolist()
    out, found = suggest_tags_for_media(
        index,
        query,
        model_version="v",
        posterior=posterior,
        neighbours=3,
        exclude_post_ids=["me"],
        top_k=4,
    )
    assert [n.post_id for n in found] == ["cat1", "cat2", "dog1"]
    assert out == serving_suggestions(found, posterior, limit=3, top_k=4)
    assert ("typo" in {s.tag for s in out}) is (posterior is None)
    with pytest.raises(InvalidInputError):
        suggest_tags_for_media(index, query, model_version="v", neighbours=0)


def test_emitted_tags_keep_the_order_and_cut_below_min_score() -> None:
    ranked = [TagSuggestion("a", 0.6, 2), TagSuggestion("b", 0.2, 1), TagSuggestion("c", 0.1, 1)]
    assert emitted_tags(ranked, 0.0) == ["a", "b", "c"]
    assert emitted_tags(ranked, 0.2) == ["a", "b"]  # the threshold itself is emitted
    assert emitted_tags(ranked, 0.7) == []
