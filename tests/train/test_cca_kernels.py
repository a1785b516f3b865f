"""Closed-form CCA, histogram kernels, kernel ridge and posterior matching on small data."""

from __future__ import annotations

import numpy as np
import pytest

from crossfeed.encoders.exceptions import TrainingError
from crossfeed.train.cca import CCAConfig, fit_cca
from crossfeed.train.kernels import (
    KernelRidgeClassifier,
    KernelSpec,
    chi2_distance,
    softmax,
)
from crossfeed.train.metrics import mean_average_precision
from crossfeed.train.posterior import PosteriorMatchConfig, PosteriorMatcher


def test_cca_recovers_the_shared_signal() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2000, 2))  # two shared latent factors
    x = np.hstack([z, rng.normal(size=(2000, 3))]) @ rng.normal(size=(5, 5))
    y = np.hstack([z + 0.1 * rng.normal(size=(2000, 2)), rng.normal(size=(2000, 2))])
    model = fit_cca(x, y, CCAConfig(reg=1e-6))
    assert model.correlations[:2] == pytest.approx([1.0, 1.0], abs=0.02)
    assert model.correlations[2:].max() < 0.15  # the rest is noise
    u, v = model.transform_x(x), model.transform_y(y)
    # Canonical variates are whitened and pairwise correlated by the correlations.
    np.testing.assert_allclose(np.cov(u.T, bias=True), np.eye(4), atol=1e-3)
    np.testing.assert_allclose(np.diag(u.T @ v / len(u)), model.correlations, atol=1e-3)


def test_cca_refuses_bad_input() -> None:
    with pytest.raises(TrainingError):
        fit_cca(np.zeros((5, 3)), np.zeros((4, 2)))
    with pytest.raises(TrainingError):
        fit_cca(np.ones((5, 3)), np.ones((5, 2)), CCAConfig(dim=3))


def test_chi2_distance_matches_formula() -> None:
    a = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    b = np.array([[0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])
    # (0,0): 0 + 0.25/0.5 + 0.25/0.5 = 1; (0,1): 0; (1,0): 0.25/1.5 + 0 + 0.25/0.5
    expected = np.array([[1.0, 0.0], [0.25 / 1.5 + 0.5, 0.25 / 1.5 + 0.5]])
    np.testing.assert_allclose(chi2_distance(a, b), expected, rtol=1e-6)
    with pytest.raises(TrainingError):
        chi2_distance(-a, b)


def _histograms(rng: np.random.Generator, labels: np.ndarray, d: int, sep: float) -> np.ndarray:
    """Class-dependent Dirichlet histograms: class c puts extra mass on bins c*k..c*k+k."""
    k = d // (labels.max() + 1)
    alpha = np.ones((len(labels), d))
    for i, c in enumerate(labels):
        alpha[i, c * k : (c + 1) * k] += sep
    return np.vstack([rng.dirichlet(a) for a in alpha])


def test_kernel_ridge_classifier_separates_classes() -> None:
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 40)
    x = _histograms(rng, y, 12, 3.0)
    clf = KernelRidgeClassifier(KernelSpec("chi2", 2.0), lam=0.3).fit(x, y)
    y_new = np.repeat(np.arange(3), 20)
    pred = clf.decision_scores(_histograms(rng, y_new, 12, 3.0)).argmax(1)
    assert (pred == y_new).mean() > 0.85
    p = softmax(clf.decision_scores(x), 0.1)
    np.testing.assert_allclose(p.sum(1), 1.0)


def test_posterior_matcher_picks_params_inside_train_and_retrieves() -> None:
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(3), 30)
    img, txt = _histograms(rng, y, 12, 2.0), _histograms(rng, y, 6, 4.0)
    cfg = PosteriorMatchConfig(gammas=(1.0, 2.0), lams=(0.3, 1.0), temperatures=(0.1, 0.3))
    matcher = PosteriorMatcher(cfg).fit(img, txt, y)
    assert matcher.report is not None
    assert matcher.report.image.gamma in cfg.gammas and matcher.report.text.lam in cfg.lams
    assert 0.0 < matcher.report.score <= 1.0
    y_te = np.repeat(np.arange(3), 15)
    s = matcher.similarity(_histograms(rng, y_te, 12, 2.0), _histograms(rng, y_te, 6, 4.0))
    assert s.shape == (45, 45)
    assert mean_average_precision(s, y_te, y_te) > 0.6  # chance is ~0.35
    assert mean_average_precision(s.T, y_te, y_te) > 0.6


def test_posterior_matcher_refuses_unpaired_rows() -> None:
    with pytest.raises(TrainingError):
        PosteriorMatcher().fit(np.ones((10, 3)), np.ones((9, 3)), np.zeros(10, dtype=int))
    with pytest.raises(TrainingError):
        PosteriorMatcher().similarity(np.ones((1, 3)), np.ones((1, 3)))
