"""The stream step's ``min_score``: chosen on a validation carve-out of train, scored on test."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crossfeed.core.schema import MediaItem, Post
from crossfeed.core.settings import Settings
from crossfeed.corpus.io import split_posts
from crossfeed.encoders.base import l2_normalize
from crossfeed.exceptions import InvalidInputError
from crossfeed.indexer.base import IndexRow
from crossfeed.indexer.memory import InMemoryIndex
from crossfeed.retrieval import suggest as serving
from crossfeed.retrieval.suggest import TagSuggestion, suggest_tags_for_media
from crossfeed.train import clipart_report as rep
from crossfeed.train.clipart import ClipartEvalOptions, _choose_stream_min_score
from crossfeed.train.clipart_data import ClipartSplit, assemble_split, validation_split
from crossfeed.train.clipart_methods import Space
from crossfeed.train.train_data import TrainingData

CATEGORIES = ("animals", "food", "shapes")
SUBJECTS = ("a", "b", "c")


def _s(*pairs: tuple[str, float]) -> list[TagSuggestion]:
    return [TagSuggestion(tag, score, 1) for tag, score in pairs]


# One right tag scored high, three wrong ones scored 0.2 or less.
_ITEM = _s(("a", 0.6), ("b", 0.2), ("c", 0.2), ("d", 0.1))


def test_the_threshold_is_the_validation_optimum_even_where_test_prefers_another() -> None:
    # Validation: only "a" is right, so cutting below 0.3 (where b and c go) wins.
    val_truth = [["a"]] * 10
    # Test: all four are right, so test alone would keep every suggestion.
    test_truth = [["a", "b", "c", "d"]] * 10
    best, sweep = rep.choose_min_score([_ITEM] * 10, val_truth)
    assert best == 0.3  # 0.3, 0.4 and 0.5 tie at F0.5 = 1; ties go to the lower one
    assert sweep[0.3]["f0.5"] == 1.0 and sweep[0.2]["f0.5"] < 1.0
    assert list(sweep) == sorted(rep.MIN_SCORE_GRID)
    assert rep.choose_min_score([_ITEM] * 10, test_truth)[0] == 0.0  # what test would pick

    out = rep.stream_metrics([_ITEM] * 10, test_truth, best)
    assert out["stream_min_score"] == 0.3
    assert out["stream_precision"] == 1.0 and out["stream_recall"] == 0.25
    assert out["stream_tags_per_item"] == 1.0 and out["stream_coverage"] == 1.0
    # ... and beside it the plain top-k baseline (min_score 0).
    assert out["stream_top_k_recall"] == 1.0 and out["stream_top_k_tags_per_item"] == 4.0


def test_emitted_scores_pool_over_items_with_truth() -> None:
    suggested = [_s(("a", 0.5), ("x", 0.4)), _s(("b", 0.05)), _s(("c", 0.9)), []]
    truth: list[list[str]] = [["a", "z"], ["b"], [], ["q"]]
    at_0 = rep.emitted_scores(suggested, truth, 0.0)
    # Items with truth: 3 tags shown (a, x, b), 2 right; 4 true tags wanted.
    assert at_0["precision"] == pytest.approx(2 / 3) and at_0["recall"] == pytest.approx(2 / 4)
    p, r = 2 / 3, 2 / 4
    assert at_0["f0.5"] == pytest.approx(1.25 * p * r / (0.25 * p + r))
    # Coverage and volume count every item, with truth or not.
    assert at_0["coverage"] == 0.75 and at_0["tags_per_item"] == 1.0
    high = rep.emitted_scores(suggested, truth, 0.95)
    assert np.isnan(high["precision"]) and high["f0.5"] == 0.0 and high["coverage"] == 0.0
    with pytest.raises(InvalidInputError):
        rep.emitted_scores(suggested, truth[:2], 0.1)
    with pytest.raises(InvalidInputError):
        rep.choose_min_score(suggested, truth, grid=())


# ----------------------------------------------------------- a synthetic corpus


def _post(pid: str, cat: str, subject: str, files: list[str], repost_of: str | None) -> Post:
    meta: dict[str, object] = {
        "top_category": cat,
        "source_file": files[0],
        "source_files": files,
        "relevant_tags": [cat, f"{cat}_{subject}"],
    }
    if repost_of:
        meta["repost_of"] = repost_of
    return Post(
        id=pid,
        source="test",
        author="a",
        created_at=datetime(2024, 1, 1, tzinfo=UTC),
        text=f"{cat} {subject}",
        media=[MediaItem(kind="image", path=files[0])],
        metadata=meta,
    )


def _corpus(n: int = 150, seed: int = 0) -> tuple[list[Post], TrainingData]:
    """Originals, reposts of some (same picture) and collages of two pictures; one row each."""
    rng = np.random.default_rng(seed)
    cat_img, sub_img = rng.standard_normal((3, 16)), rng.standard_normal((3, 16))
    cat_txt, sub_txt = rng.standard_normal((3, 12)), rng.standard_normal((3, 12))
    posts: list[Post] = []
    img, txt, tags = [], [], []
    for i in range(n):
        c, s = int(rng.integers(3)), int(rng.integers(3))
        pid, kind = f"p{i:03d}", i % 10
        if kind == 7 and i > 10:  # a repost of an earlier original: the same picture
            orig = posts[i - 5]
            files, repost = list(orig.metadata["source_files"]), orig.id  # type: ignore[index]
            c, s = CATEGORIES.index(orig.metadata["top_category"]), 0  # type: ignore[index]
        elif kind == 9:  # a collage of its own picture and an earlier one
            files, repost = [f"f{i}.png", f"f{i - 4}.png"], None
        else:
            files, repost = [f"f{i}.png"], None
        posts.append(_post(pid, CATEGORIES[c], SUBJECTS[s], files, repost))
        img.append(cat_img[c] + 0.7 * sub_img[s] + 0.4 * rng.standard_normal(16))
        txt.append(cat_txt[c] + 0.7 * sub_txt[s] + 0.4 * rng.standard_normal(12))
        noise = ["tbt"] if rng.random() < 0.3 else []
        tags.append([CATEGORIES[c], f"{CATEGORIES[c]}_{SUBJECTS[s]}", *noise])
    data = TrainingData(
        post_ids=[p.id for p in posts],
        image=np.asarray(img, np.float32),
        text=np.asarray(txt, np.float32),
        tags=tags,
        modalities=["image"] * n,
        media_refs=[p.id for p in posts],
        data_hash="h",
    )
    return posts, data


def _split(posts: Sequence[Post], data: TrainingData) -> ClipartSplit:
    train, test = split_posts(posts, 0.25, 0)
    by_id = {p.id: p for p in posts}
    return assemble_split(
        by_id, data, {p.id for p in train}, test, list(CATEGORIES), Path("posts.jsonl"), []
    )


@pytest.fixture(scope="module")
def split() -> ClipartSplit:
    return _split(*_corpus())


def _sources(post: Post) -> set[str]:
    meta = post.metadata or {}
    return {*(f"file:{f}" for f in meta["source_files"]), f"post:{meta.get('repost_of', post.id)}"}


def test_the_validation_carve_out_keeps_pictures_whole_and_test_out(split: ClipartSplit) -> None:
    val = validation_split(split, 0.2, seed=3)
    train_ids = set(split.train.post_ids)
    fit_ids, val_ids = set(val.train.post_ids), set(val.gallery.post_ids)
    assert fit_ids and val_ids and not fit_ids & val_ids
    assert fit_ids | val_ids <= train_ids  # nothing of the test split
    assert set(val.queries.post_ids) == val_ids
    assert not any(split.posts[p].metadata.get("repost_of") for p in val_ids)  # type: ignore[union-attr]
    # No source picture (nor a repost or collage of it) on both sides.
    fit_sources = set().union(*(_sources(split.posts[p]) for p in fit_ids))
    val_side = train_ids - fit_ids  # the validation posts, reposts included
    assert not fit_sources & set().union(*(_sources(split.posts[p]) for p in val_side))
    assert any(split.posts[p].metadata.get("repost_of") for p in val_side | fit_ids)  # type: ignore[union-attr]
    assert validation_split(split, 0.2, seed=3).gallery.post_ids == val.gallery.post_ids


def test_the_choice_never_reads_the_test_split(split: ClipartSplit, tmp_path: Path) -> None:
    opts = ClipartEvalOptions(out_dir=tmp_path, progress=False, sheet=False, save=False)
    settings = Settings()
    choice = _choose_stream_min_score("ridge", split, 0, opts, {}, settings)
    assert choice["min_score"] in rep.MIN_SCORE_GRID
    sweep = choice["sweep"]
    assert (
        max(sweep.values(), key=lambda s: s["f0.5"])["f0.5"]
        == sweep[f"{choice['min_score']:g}"]["f0.5"]
    )
    assert choice["fit_pairs"] + choice["validation_media"] <= len(split.train)
    # Destroy the test side: its posts are gone and its features are NaN.
    test_ids = set(split.gallery.post_ids)
    nan = dataclasses.replace(split.gallery, image=np.full_like(split.gallery.image, np.nan))
    blind = dataclasses.replace(
        split,
        posts={k: v for k, v in split.posts.items() if k not in test_ids},
        gallery=nan,
        queries=dataclasses.replace(split.queries, image=np.full_like(split.queries.image, np.nan)),
    )
    assert _choose_stream_min_score("ridge", blind, 0, opts, {}, settings) == choice
    assert not list(tmp_path.iterdir())  # the refit writes no curves


def _space(posterior: bool) -> Space:
    return Space(
        name="t",
        embed_image=lambda x: l2_normalize(np.asarray(x, np.float64)),
        embed_text=lambda x: l2_normalize(np.asarray(x, np.float64)),
        image_posterior=(lambda x: np.tile([0.2, 0.8], (len(x), 1))) if posterior else None,
        info={"vocab_tags": ["x", "y"]},
    )


def _tiny_split() -> ClipartSplit:
    """Query Q equals post A (tags x, typo) and is orthogonal to post B (tag y)."""
    eye = np.eye(4, dtype=np.float32)
    tags = [["x", "typo"], ["y"]]
    train = TrainingData(["A", "B"], eye[:2], eye[:2], tags, ["image"] * 2, ["a", "b"], "")
    gallery = dataclasses.replace(train, post_ids=["Q"], image=eye[:1], text=eye[:1], tags=[[]])
    return dataclasses.replace(_split(*_corpus(20)), train=train, gallery=gallery)


def test_the_stream_recipe_mixes_in_the_posterior_of_a_tag_space() -> None:
    split = _tiny_split()
    (votes,) = rep.stream_suggestions(_space(False), split)
    # Votes alone: the near post A's tags (any tag, as the stream), B's far behind.
    assert [s.tag for s in votes][:2] == ["typo", "x"] and votes[0].score == pytest.approx(1.0)
    (mixed,) = rep.stream_suggestions(_space(True), split)
    # Half votes, half p(tag): only the head's vocabulary.
    scores = {s.tag: s.score for s in mixed}
    assert set(scores) == {"x", "y"}
    assert scores["x"] == pytest.approx(0.5 * 1.0 + 0.5 * 0.2, abs=1e-6)
    assert scores["y"] == pytest.approx(0.5 * 0.8, abs=1e-6)


# ------------------------------------------------- the eval measures what is served


def _projected_space(posterior: bool) -> Space:
    """Image (16-d) and text (12-d) features projected into one 8-d space.

    Its vocabulary leaves out the noise tag ``tbt`` that many training posts carry.
    """
    rng = np.random.default_rng(7)
    w_img, w_txt = rng.standard_normal((16, 8)), rng.standard_normal((12, 8))
    vocab = [*CATEGORIES, *(f"{c}_{s}" for c in CATEGORIES for s in SUBJECTS)]

    def p_tag(x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)[:, : len(vocab)]))

    return Space(
        name="proj",
        embed_image=lambda x: l2_normalize(np.asarray(x, np.float64) @ w_img),
        embed_text=lambda x: l2_normalize(np.asarray(x, np.float64) @ w_txt),
        image_posterior=p_tag if posterior else None,
        info={"vocab_tags": vocab},
    )


def _served_index(space: Space, split: ClipartSplit) -> InMemoryIndex:
    """The training posts indexed as the stream would: one media and one text row each."""
    train = split.train
    index = InMemoryIndex(dim=8)
    rows = []
    for item, vectors in ((1, space.embed_image(train.image)), (0, space.embed_text(train.text))):
        for pid, tags, vec in zip(train.post_ids, train.tags, vectors, strict=True):
            rows.append(
                IndexRow(
                    row_id=f"{pid}:{item}",
                    post_id=pid,
                    item=item,
                    modality="image" if item else "text",
                    vector=[float(v) for v in vec],
                    created_at_ms=0,
                    author="a",
                    text="",
                    tags=tuple(tags),
                    lang="en",
                    model_version="v",
                    media_ref="",
                )
            )
    index.upsert(rows)
    return index


@pytest.mark.parametrize("posterior", [False, True])
def test_stream_suggestions_are_what_the_api_and_stream_serve(
    split: ClipartSplit, posterior: bool
) -> None:
    space = _projected_space(posterior)
    evaluated = rep.stream_suggestions(space, split, neighbours=20, top_k=5)
    index = _served_index(space, split)
    queries = space.embed_image(split.gallery.image)
    vocab = space.info["vocab_tags"]
    posteriors: list[dict[str, float] | None] = [None] * len(queries)
    if space.image_posterior is not None:
        probs = space.image_posterior(split.gallery.image)
        posteriors = [dict(zip(vocab, row.tolist(), strict=True)) for row in probs]
    assert len(evaluated) == len(split.gallery) > 10
    for got, query, post in zip(evaluated, queries, posteriors, strict=True):
        served, _ = suggest_tags_for_media(
            index, query.tolist(), model_version="v", posterior=post, neighbours=20, top_k=5
        )
        assert [(s.tag, s.support) for s in got] == [(s.tag, s.support) for s in served]
        assert [s.score for s in got] == pytest.approx([s.score for s in served], abs=1e-5)
    proposed = {s.tag for row in evaluated for s in row}
    # A tag space's suggestions keep to its vocabulary; votes alone propose any tag.
    assert all(evaluated) and ("tbt" in proposed) is not posterior


def test_the_eval_follows_a_change_of_the_served_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    split = _tiny_split()
    # Serve a different mix: the eval must score it, not a copy of the old one.
    monkeypatch.setattr(serving, "POSTERIOR_MIX", 0.25)
    (mixed,) = rep.stream_suggestions(_space(True), split)
    scores = {s.tag: s.score for s in mixed}
    assert scores["x"] == pytest.approx(0.75 * 1.0 + 0.25 * 0.2, abs=1e-6)
    assert scores["y"] == pytest.approx(0.25 * 0.8, abs=1e-6)
    # The scores come from the serving function and are cut by the serving threshold.
    calls: list[str] = []
    recipe, cut = serving.serving_suggestions, serving.emitted_tags

    def spy_recipe(*args: Any, **kwargs: Any) -> list[TagSuggestion]:
        calls.append("recipe")
        return recipe(*args, **kwargs)

    def spy_cut(suggestions: Sequence[TagSuggestion], min_score: float) -> list[str]:
        calls.append(f"cut@{min_score:g}")
        return cut(suggestions, min_score)[:1]  # a stricter served cut: one tag at most

    monkeypatch.setattr(serving, "serving_suggestions", spy_recipe)
    monkeypatch.setattr(serving, "emitted_tags", spy_cut)
    (row,) = rep.stream_suggestions(_space(True), split)
    assert row == mixed and calls == ["recipe"]
    out = rep.stream_metrics([row], [["x"]], 0.1)
    assert calls[1:] == ["cut@0.1", "cut@0"]
    assert out["stream_tags_per_item"] == 1.0 and out["stream_top_k_tags_per_item"] == 1.0
