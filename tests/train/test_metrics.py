"""Retrieval metrics on hand-checkable examples and against a naive reference."""

from __future__ import annotations

import numpy as np
import pytest

from crossfeed.encoders.exceptions import TrainingError
from crossfeed.train.metrics import (
    average_precisions,
    mean_average_precision,
    relevance,
    retrieval_scores,
)


def test_average_precision_by_hand() -> None:
    # Query 0 (class 0) ranks g0 (rel), g1, g2 (rel): AP = (1/1 + 2/3) / 2.
    # Query 1 (class 1) ranks g2, g1 (rel), g0: AP = 1/2.
    scores = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    q, g = np.array([0, 1]), np.array([0, 1, 0])
    ap = average_precisions(scores, q, g)
    np.testing.assert_allclose(ap, [(1 + 2 / 3) / 2, 0.5])
    assert mean_average_precision(scores, q, g) == pytest.approx((5 / 6 + 0.5) / 2)


def test_recall_and_precision_at_k_by_hand() -> None:
    scores = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    r = retrieval_scores(scores, np.array([0, 1]), np.array([0, 1, 0]), ks=(1, 2, 5))
    # R@k = queries with >= 1 relevant in the top k: q0 hits at rank 1, q1 at rank 2.
    assert r.recall_at == {1: 0.5, 2: 1.0, 5: 1.0}
    # P@1: q0 1/1, q1 0/1; P@2: q0 1/2, q1 1/2; P@5 counts over k even past the gallery.
    assert r.precision_at[1] == pytest.approx(0.5)
    assert r.precision_at[2] == pytest.approx(0.5)
    assert r.precision_at[5] == pytest.approx((2 / 5 + 1 / 5) / 2)
    assert r.map == pytest.approx((5 / 6 + 0.5) / 2)
    assert r.n_queries == 2


def test_ties_break_by_gallery_index() -> None:
    # Equal scores: the earlier gallery item (irrelevant) ranks first -> AP 1/2.
    ap = average_precisions(np.array([[1.0, 1.0]]), np.array([0]), np.array([1, 0]))
    assert ap[0] == pytest.approx(0.5)


def test_queries_without_relevant_items_are_left_out() -> None:
    scores = np.array([[1.0, 0.0], [0.5, 0.2]])
    q, g = np.array([0, 7]), np.array([0, 1])
    assert np.isnan(average_precisions(scores, q, g)[1])
    r = retrieval_scores(scores, q, g)
    assert r.n_queries == 1
    assert r.map == pytest.approx(1.0)


def test_multi_label_relevance_is_sharing_a_tag() -> None:
    q = np.array([[1, 0, 1], [0, 1, 0]])
    g = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 0], [0, 0, 0]])
    rel = relevance(q, g)
    np.testing.assert_array_equal(rel, [[True, True, True, False], [False, True, False, False]])


def _naive_map(scores: np.ndarray, q: np.ndarray, g: np.ndarray) -> float:
    aps = []
    for i in range(len(q)):
        order = sorted(range(len(g)), key=lambda j: (-scores[i, j], j))
        hits, precs = 0, []
        for rank, j in enumerate(order, start=1):
            if g[j] == q[i]:
                hits += 1
                precs.append(hits / rank)
        if precs:
            aps.append(sum(precs) / len(precs))
    return float(np.mean(aps))


def test_matches_naive_reference_and_chunking() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=(37, 53)), 1)  # rounding creates ties
    q, g = rng.integers(0, 4, 37), rng.integers(0, 4, 53)
    expected = _naive_map(scores, q, g)
    assert mean_average_precision(scores, q, g) == pytest.approx(expected)
    chunked = np.nanmean(average_precisions(scores, q, g, chunk=5))
    assert chunked == pytest.approx(expected)


def test_bad_input_is_refused() -> None:
    with pytest.raises(TrainingError):
        mean_average_precision(np.zeros((2, 3)), np.array([0, 1]), np.array([0, 1]))
    with pytest.raises(TrainingError):
        mean_average_precision(np.array([[np.nan]]), np.array([0]), np.array([0]))
    with pytest.raises(TrainingError):
        retrieval_scores(np.zeros((1, 1)), np.array([0]), np.array([0]), ks=(0,))
