"""Cross-modal retrieval metrics: mAP, P@k and R@k, vectorised over queries.

Conventions (the same as the Wikipedia benchmark papers, so numbers compare):

* ``scores`` is ``(n_queries, n_gallery)``, higher = more similar; each row is
  ranked independently. Ties are broken by gallery index (a stable sort), so a
  run is deterministic.
* Relevance comes from labels: with 1-D integer labels an item is relevant when
  its class equals the query's; with 2-D 0/1 label matrices (multi-label tags)
  it is relevant when it shares at least one label with the query.
* AP of a query = mean over its relevant items of the precision at their rank.
  Queries with no relevant gallery item have no defined AP and are left out of
  the mean (and of R@k); the returned ``n_queries`` says how many counted.
* R@k is the fraction of queries with *at least one* relevant item in the top
  k (the "hit rate" used by retrieval papers), not the fraction of all
  relevant items retrieved. P@k is the mean fraction of the top k that is
  relevant.

Work is done in chunks of queries so memory stays at ``chunk * n_gallery``
even for large galleries.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from crossfeed.encoders.exceptions import TrainingError

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)


@dataclass(frozen=True)
class RetrievalScores:
    """Metrics of one retrieval direction (e.g. image queries against texts)."""

    map: float
    recall_at: dict[int, float]
    precision_at: dict[int, float]
    n_queries: int


def relevance(query_labels: np.ndarray, gallery_labels: np.ndarray) -> np.ndarray:
    """``(nq,)``/``(nq, L)`` and ``(ng,)``/``(ng, L)`` labels -> ``(nq, ng)`` bool relevance."""
    q = np.asarray(query_labels)
    g = np.asarray(gallery_labels)
    if q.ndim != g.ndim or q.ndim not in (1, 2):
        raise TrainingError(
            f"labels must both be 1-D classes or both 2-D label matrices, got {q.shape}, {g.shape}"
        )
    if q.ndim == 1:
        return q[:, None] == g[None, :]
    if q.shape[1] != g.shape[1]:
        raise TrainingError(f"label vocabularies differ: {q.shape[1]} vs {g.shape[1]}")
    return (q.astype(np.float32) @ g.astype(np.float32).T) > 0


def _check(scores: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise TrainingError(f"scores must be (n_queries, n_gallery), got shape {s.shape}")
    if len(query_labels) != s.shape[0] or len(gallery_labels) != s.shape[1]:
        raise TrainingError(
            f"scores {s.shape} do not match {len(query_labels)} query and "
            f"{len(gallery_labels)} gallery labels"
        )
    if not np.all(np.isfinite(s)):
        raise TrainingError("scores contain NaN or infinity")
    return s


def _ranked_relevance(
    scores: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    chunk: int,
    stable: bool = True,
) -> Iterator[np.ndarray]:
    """Yield ``(chunk, n_gallery)`` 0/1 relevance in ranked order, chunk by chunk."""
    for start in range(0, scores.shape[0], chunk):
        block = scores[start : start + chunk]  # (c, ng)
        order = np.argsort(-block, axis=1, kind="stable" if stable else None)  # (c, ng)
        q = query_labels[start : start + chunk]
        if q.ndim == 1 and gallery_labels.ndim == 1:  # single label: gather, no (c, ng) matrix
            yield (gallery_labels[order] == q[:, None]).astype(np.float64)
        else:
            rel = relevance(q, gallery_labels)  # (c, ng)
            yield np.take_along_axis(rel, order, axis=1).astype(np.float64)


def average_precisions(
    scores: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    chunk: int = 1024,
    stable: bool = True,
) -> np.ndarray:
    """Per-query AP, ``(n_queries,)``; NaN for queries without any relevant item.

    ``stable=False`` uses a faster sort whose tie order is unspecified (fine
    for model selection on continuous scores; reported numbers use the default).
    """
    s = _check(scores, query_labels, gallery_labels)
    ranks = np.arange(1, s.shape[1] + 1, dtype=np.float64)  # (ng,)
    out = []
    q, g = np.asarray(query_labels), np.asarray(gallery_labels)
    for rel in _ranked_relevance(s, q, g, chunk, stable):
        n_rel = rel.sum(axis=1)  # (c,)
        prec = np.cumsum(rel, axis=1) / ranks  # (c, ng) precision at every rank
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(np.where(n_rel > 0, (prec * rel).sum(axis=1) / n_rel, np.nan))
    return np.concatenate(out) if out else np.zeros(0)


def mean_average_precision(
    scores: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    stable: bool = True,
) -> float:
    """mAP over queries that have at least one relevant gallery item."""
    ap = average_precisions(scores, query_labels, gallery_labels, stable=stable)
    ap = ap[~np.isnan(ap)]
    return float(ap.mean()) if ap.size else float("nan")


def retrieval_scores(
    scores: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    chunk: int = 1024,
) -> RetrievalScores:
    """mAP, R@k (hit rate) and P@k in one pass over the ranked lists."""
    s = _check(scores, query_labels, gallery_labels)
    if any(k < 1 for k in ks):
        raise TrainingError(f"k must be >= 1, got {list(ks)}")
    ranks = np.arange(1, s.shape[1] + 1, dtype=np.float64)
    aps: list[np.ndarray] = []
    hits: dict[int, list[np.ndarray]] = {k: [] for k in ks}
    precs: dict[int, list[np.ndarray]] = {k: [] for k in ks}
    for rel in _ranked_relevance(s, np.asarray(query_labels), np.asarray(gallery_labels), chunk):
        n_rel = rel.sum(axis=1)
        keep = n_rel > 0
        rel, n_rel = rel[keep], n_rel[keep]
        aps.append((np.cumsum(rel, axis=1) / ranks * rel).sum(axis=1) / n_rel)
        for k in ks:
            top = rel[:, :k]  # (c, min(k, ng))
            hits[k].append(top.max(axis=1, initial=0.0))
            precs[k].append(top.sum(axis=1) / k)
    ap = np.concatenate(aps) if aps else np.zeros(0)
    n = int(ap.size)

    def _mean(parts: list[np.ndarray]) -> float:
        return float(np.concatenate(parts).mean()) if n else float("nan")

    return RetrievalScores(
        map=float(ap.mean()) if n else float("nan"),
        recall_at={k: _mean(hits[k]) for k in ks},
        precision_at={k: _mean(precs[k]) for k in ks},
        n_queries=n,
    )
