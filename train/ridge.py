"""The bootstrap image head: a ridge map from image features to text embeddings.

Until a learned head exists, images enter the shared (text) space through a
linear map fitted so that a post's image features predict the embedding of
the same post's text. The ridge strength is picked by K-fold cross-validation
inside the training data (folds split by post, so two images of one post never
sit on both sides), scoring the mean cosine between prediction and target,
which is what retrieval ranks by.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crossfeed.encoders.base import l2_normalize
from crossfeed.encoders.exceptions import TrainingError

if TYPE_CHECKING:
    from crossfeed.core.settings import Settings
    from crossfeed.encoders.model import SharedSpaceEmbedder

log = logging.getLogger(__name__)

# Alphas relative to the mean eigenvalue of the centred Gram matrix, so one grid
# suits features of any scale.
DEFAULT_RELATIVE_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-5, 3, 17))
RECALL_KS = (1, 5, 10)
_RECALL_POOL = 1000  # candidates per fold for the recall estimate (bounds memory)


@dataclass
class RidgeFit:
    """``predict(x) = x @ weight + bias``; ``alpha`` is the absolute ridge strength."""

    weight: np.ndarray
    bias: np.ndarray
    alpha: float
    alphas: list[float]
    cv_cosine: list[float]
    metrics: dict[str, Any] = field(default_factory=dict)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) @ self.weight + self.bias


class _RidgeSolver:
    """Solutions for many alphas from one eigendecomposition of the centred data."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x_mean = x.mean(axis=0)
        self.y_mean = y.mean(axis=0)
        xc = x - self.x_mean
        yc = y - self.y_mean
        n, d = xc.shape
        self.primal = n >= d
        if self.primal:
            # W = V diag(1 / (s + a)) V^T X^T Y with X^T X = V diag(s) V^T
            evals, self.vecs = np.linalg.eigh(xc.T @ xc)
            self.proj = self.vecs.T @ (xc.T @ yc)
        else:
            # Dual form for n < d: W = X^T U diag(1 / (s + a)) U^T Y with X X^T = U diag(s) U^T
            evals, self.vecs = np.linalg.eigh(xc @ xc.T)
            self.proj = self.vecs.T @ yc
            self.xc_t = xc.T
        self.evals = np.clip(evals, 0.0, None)
        self.scale = float(self.evals.sum() / d) if d else 1.0

    def weight(self, alpha: float) -> np.ndarray:
        inner = self.proj / (self.evals + alpha)[:, None]
        if self.primal:
            return self.vecs @ inner
        return self.xc_t @ (self.vecs @ inner)

    def bias(self, weight: np.ndarray) -> np.ndarray:
        return self.y_mean - self.x_mean @ weight


def _group_folds(groups: Sequence[str], n_folds: int, seed: int) -> list[np.ndarray]:
    """Row indices of each validation fold, whole groups (posts) at a time."""
    unique = sorted(set(groups))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(unique))
    fold_of = {unique[j]: i % n_folds for i, j in enumerate(order)}
    assignment = np.array([fold_of[g] for g in groups])
    return [np.flatnonzero(assignment == k) for k in range(n_folds)]


def _mean_cosine(pred: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean(np.sum(l2_normalize(pred) * l2_normalize(target), axis=1)))


def _recall_at_k(
    pred: np.ndarray, target: np.ndarray, rng: np.random.Generator
) -> dict[int, float]:
    """Image->text retrieval: is row i's own text in the top k for prediction i?"""
    if len(pred) > _RECALL_POOL:
        keep = rng.choice(len(pred), _RECALL_POOL, replace=False)
        pred, target = pred[keep], target[keep]
    sims = l2_normalize(pred) @ l2_normalize(target).T
    own = np.diag(sims)
    rank = (sims > own[:, None]).sum(axis=1)  # 0 = own text ranked first
    return {k: float(np.mean(rank < k)) for k in RECALL_KS}


def fit_ridge(
    x: np.ndarray,
    y: np.ndarray,
    *,
    groups: Sequence[str] | None = None,
    relative_alphas: Sequence[float] = DEFAULT_RELATIVE_ALPHAS,
    n_folds: int = 5,
    seed: int = 0,
) -> RidgeFit:
    """Fit ``y ~ x @ W + b``, choosing alpha by grouped K-fold CV on mean cosine.

    ``y`` rows are L2-normalised first (the targets live on the unit sphere).
    ``groups`` (e.g. post ids) keep related rows in the same fold; each row is
    its own group when omitted. Raises :class:`TrainingError` on too little or
    degenerate data.
    """
    x = np.asarray(x, dtype=np.float64)
    y = l2_normalize(np.asarray(y, dtype=np.float64)).astype(np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise TrainingError(f"x and y must be 2-d with equal rows, got {x.shape} and {y.shape}")
    if not np.all(np.isfinite(x)) or not np.all(np.isfinite(y)):
        raise TrainingError("features contain NaN or infinite values")
    groups = list(groups) if groups is not None else [str(i) for i in range(len(x))]
    if len(groups) != len(x):
        raise TrainingError("groups must have one entry per row")
    n_groups = len(set(groups))
    n_folds = min(n_folds, n_groups)
    if n_folds < 2 or len(x) < 4:
        raise TrainingError(f"need at least 4 pairs from 2+ posts to fit a head, got {len(x)}")

    full = _RidgeSolver(x, y)
    if full.scale <= 0:
        raise TrainingError("image features are constant; nothing to fit")
    alphas = [float(r * full.scale) for r in relative_alphas]
    folds = _group_folds(groups, n_folds, seed)
    scores = np.zeros((n_folds, len(alphas)))
    mses = np.zeros((n_folds, len(alphas)))
    # One eigendecomposition per fold (the expensive part), reused for every alpha.
    solvers = [
        _RidgeSolver(x[train], y[train])
        for train in (np.setdiff1d(np.arange(len(x)), val, assume_unique=True) for val in folds)
    ]
    for k, (val, solver) in enumerate(zip(folds, solvers, strict=True)):
        for j, alpha in enumerate(alphas):
            w = solver.weight(alpha)
            pred = x[val] @ w + solver.bias(w)
            scores[k, j] = _mean_cosine(pred, y[val])
            mses[k, j] = float(np.mean((pred - y[val]) ** 2))
    # Folds can differ in size; weight each by its rows.
    sizes = np.array([len(f) for f in folds], dtype=np.float64)
    cv_cosine = (scores * sizes[:, None]).sum(axis=0) / sizes.sum()
    cv_mse = (mses * sizes[:, None]).sum(axis=0) / sizes.sum()
    best = int(np.argmax(cv_cosine))
    alpha = alphas[best]

    # Held-out retrieval quality at the chosen alpha (the number a reader cares about).
    rng = np.random.default_rng(seed)
    recalls: dict[int, list[float]] = {k: [] for k in RECALL_KS}
    for val, solver in zip(folds, solvers, strict=True):
        w = solver.weight(alpha)
        for k, value in _recall_at_k(x[val] @ w + solver.bias(w), y[val], rng).items():
            recalls[k].append(value)

    weight = full.weight(alpha)
    bias = full.bias(weight)
    pool = float(min(_RECALL_POOL, sizes.mean()))
    metrics: dict[str, Any] = {
        "method": "ridge",
        "n_pairs": len(x),
        "n_posts": n_groups,
        "n_folds": n_folds,
        "in_dim": x.shape[1],
        "out_dim": y.shape[1],
        "alpha": alpha,
        "alpha_relative": float(relative_alphas[best]),
        "alpha_at_grid_edge": best in (0, len(alphas) - 1),
        "cv_cosine": float(cv_cosine[best]),
        "cv_mse": float(cv_mse[best]),
        "train_cosine": _mean_cosine(x @ weight + bias, y),
        **{f"cv_recall_at_{k}": float(np.mean(v)) for k, v in recalls.items()},
        "cv_recall_pool": pool,
        "cv_recall_at_1_chance": 1.0 / pool,
    }
    if metrics["alpha_at_grid_edge"]:
        log.warning("ridge alpha %.3g is at the edge of the search grid", alpha)
    return RidgeFit(weight, bias, alpha, alphas, [float(c) for c in cv_cosine], metrics)


def fit_bootstrap_head(
    posts_jsonl: Path,
    settings: Settings,
    *,
    version: str | None = None,
    cache_path: Path | None = None,
    embedder: SharedSpaceEmbedder | None = None,
    n_folds: int = 5,
    notes: str = "",
    progress: bool = True,
) -> str:
    """Extract features of ``posts_jsonl``, fit the ridge image head, save it; return the version.

    The text head is the identity (the shared space is the text tower's space);
    videos use the image head on pooled frames, as at inference.
    """
    from crossfeed.encoders.heads import HeadSpec, ProjectionHead
    from crossfeed.encoders.model import load_embedder
    from crossfeed.encoders.versions import new_version_id, save_heads
    from crossfeed.train.features import extract_features

    embedder = embedder or load_embedder(settings)
    pairs = extract_features(
        Path(posts_jsonl),
        embedder,
        cache_path=cache_path,
        media_roots=settings.stream.media_roots,
        progress=progress,
    )
    fit = fit_ridge(pairs.image, pairs.text, groups=pairs.post_ids, n_folds=n_folds)
    text_dim = pairs.text.shape[1]
    heads = {
        "text": ProjectionHead(HeadSpec("identity", text_dim, text_dim)),
        "image": ProjectionHead.linear_from_numpy(fit.weight, fit.bias),
    }
    metrics = {
        **fit.metrics,
        "skipped": pairs.skipped,
        "n_video_pairs": sum(m == "video" for m in pairs.modalities),
    }
    saved = save_heads(
        settings.models_dir,
        heads,
        version=version or new_version_id("ridge"),
        data_hash=pairs.data_hash,
        metrics=metrics,
        notes=notes or f"bootstrap ridge head fitted on {Path(posts_jsonl).name}",
        towers={"text": embedder.text_tower.model_id, "image": embedder.image_tower.model_id},
    )
    log.info(
        "fitted head %s: alpha %.3g, CV cosine %.3f, CV recall@1 %.3f (chance %.3f)",
        saved,
        fit.alpha,
        metrics["cv_cosine"],
        metrics["cv_recall_at_1"],
        metrics["cv_recall_at_1_chance"],
    )
    return saved
