"""Regularised canonical correlation analysis, closed form (the reference baseline).

CCA finds projections ``A`` (image) and ``B`` (text) that maximise the
correlation of ``X A`` and ``Y B`` under whitening constraints (survey eq. 3):
whiten each side with ``C^{-1/2}``, take the SVD of the whitened
cross-covariance, and map the singular vectors back. Retrieval then ranks by
cosine similarity of the centred projections, exactly as Rasiwasia et al.
(2010) did for their "CM" baseline, so ``crossfeed eval wikipedia --method cca``
reproduces the published 0.25 / 0.20 and checks the evaluation code.

The ridge added to each covariance is relative (``reg * trace(C) / d``) so that
one default works whatever the features' scale: the SIFT histograms sum to 1
and have tiny variances, the text topics are larger.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossfeed.encoders.exceptions import TrainingError


@dataclass(frozen=True)
class CCAConfig:
    """CCA settings.

    ``reg`` = 1e-3 of the mean eigenvalue keeps the 128-d BoW covariance (rank
    deficient: a histogram sums to one) invertible without noticeably bending
    the solution; ``dim`` None keeps all ``min(d_x, d_y)`` components, the
    published protocol (10 for the Wikipedia text topics).
    """

    reg: float = 1e-3
    dim: int | None = None
    scale_by_correlation: bool = False


@dataclass(frozen=True)
class CCAModel:
    """A fitted CCA: means, projections ``(d_x, k)`` / ``(d_y, k)`` and correlations ``(k,)``."""

    mean_x: np.ndarray
    mean_y: np.ndarray
    proj_x: np.ndarray
    proj_y: np.ndarray
    correlations: np.ndarray
    scale_by_correlation: bool = False

    def transform_x(self, x: np.ndarray) -> np.ndarray:
        """``(n, d_x)`` -> ``(n, k)`` canonical variates."""
        z = (np.asarray(x, dtype=np.float64) - self.mean_x) @ self.proj_x
        return z * self.correlations if self.scale_by_correlation else z

    def transform_y(self, y: np.ndarray) -> np.ndarray:
        """``(n, d_y)`` -> ``(n, k)`` canonical variates."""
        z = (np.asarray(y, dtype=np.float64) - self.mean_y) @ self.proj_y
        return z * self.correlations if self.scale_by_correlation else z


def _inv_sqrt(cov: np.ndarray, reg: float) -> np.ndarray:
    """Symmetric ``(C + r I)^{-1/2}`` via eigh, with ``r`` relative to the mean eigenvalue."""
    d = cov.shape[0]
    ridge = reg * max(float(np.trace(cov)) / d, 1e-12)
    vals, vecs = np.linalg.eigh(cov + ridge * np.eye(d))
    vals = np.clip(vals, ridge, None)
    return (vecs / np.sqrt(vals)) @ vecs.T


def fit_cca(x: np.ndarray, y: np.ndarray, config: CCAConfig | None = None) -> CCAModel:
    """Fit CCA on paired rows ``x`` ``(n, d_x)`` and ``y`` ``(n, d_y)``."""
    cfg = config or CCAConfig()
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise TrainingError(f"CCA needs paired 2-D arrays, got {x.shape} and {y.shape}")
    if x.shape[0] < 2:
        raise TrainingError("CCA needs at least two pairs")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise TrainingError("CCA input contains NaN or infinity")
    if cfg.reg <= 0:
        raise TrainingError(f"CCA reg must be positive, got {cfg.reg}")
    k_max = min(x.shape[1], y.shape[1])
    k = k_max if cfg.dim is None else cfg.dim
    if not 1 <= k <= k_max:
        raise TrainingError(f"CCA dim must be in 1..{k_max}, got {k}")
    mean_x, mean_y = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mean_x, y - mean_y
    n = x.shape[0]
    wx = _inv_sqrt(xc.T @ xc / n, cfg.reg)  # (d_x, d_x)
    wy = _inv_sqrt(yc.T @ yc / n, cfg.reg)  # (d_y, d_y)
    u, s, vt = np.linalg.svd(wx @ (xc.T @ yc / n) @ wy)  # whitened cross-covariance
    return CCAModel(
        mean_x=mean_x,
        mean_y=mean_y,
        proj_x=wx @ u[:, :k],
        proj_y=wy @ vt.T[:, :k],
        correlations=s[:k],
        scale_by_correlation=cfg.scale_by_correlation,
    )
