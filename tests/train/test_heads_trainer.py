"""Projection-head training on tiny synthetic data: learning, early stopping, export."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from crossfeed.encoders.exceptions import TrainingError
from crossfeed.encoders.heads import HeadSpec, ProjectionHead
from crossfeed.train.heads_trainer import (
    HeadsConfig,
    _fold_standardisation,
    history_summary,
    train_heads,
)
from crossfeed.train.losses import ObjectiveConfig
from crossfeed.train.metrics import mean_average_precision


def _data(n: int = 160, noise_seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """4 classes; the class structure is fixed, ``noise_seed`` draws new items."""
    structure = np.random.default_rng(123)
    centers, mix = structure.normal(size=(4, 16)), structure.normal(size=(16, 8))
    rng = np.random.default_rng(noise_seed)
    y = np.arange(n) % 4
    # Features on deliberately odd scales and offsets: standardisation must be folded in.
    img = 50.0 + 10.0 * (centers[y] + 0.5 * rng.normal(size=(n, 16)))
    txt = (centers[y] @ mix) * 0.01 + 0.005 * rng.normal(size=(n, 8))
    return img.astype(np.float32), txt.astype(np.float32), y


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models: single-threaded torch is faster and steadier on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_folded_standardisation_equals_standardising_the_input() -> None:
    torch.manual_seed(0)
    head = ProjectionHead(HeadSpec("mlp", 5, 3, 7))
    x = np.random.default_rng(0).normal(3.0, 4.0, size=(6, 5)).astype(np.float32)
    mean, std = x.mean(0), x.std(0) + 1e-6
    with torch.no_grad():
        expected = head(torch.from_numpy((x - mean) / std))
        _fold_standardisation(head, mean, std)
        got = head(torch.from_numpy(x))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_train_heads_learns_and_exports_raw_feature_heads(tmp_path: Path) -> None:
    img, txt, y = _data()
    cfg = HeadsConfig(
        dim=16,
        hidden=32,
        epochs=25,
        batch_size=32,
        patience=25,
        lr=3e-3,
        seed=1,
        objectives=ObjectiveConfig(supervised_mode="softmax"),
    )
    plot = tmp_path / "curves.png"
    threads = torch.get_num_threads()
    result = train_heads(img, txt, y, cfg, progress=False, plot_path=plot)
    assert torch.get_num_threads() == threads  # the single-thread setting is scoped
    assert plot.is_file() and plot.read_bytes()[:4] == b"\x89PNG"
    hist = result.history
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert {"epoch", "train_loss", "val_loss", "val_map"} <= set(hist[0])
    assert 1 <= result.best_epoch <= len(hist)
    assert result.best_score == pytest.approx(max(h["val_map"] for h in hist))
    assert isinstance(result.heads["image"], ProjectionHead)
    # The exported heads take raw features and give unit vectors that retrieve by class.
    x_img, x_txt, y_new = _data(80, noise_seed=7)
    e_img, e_txt = result.embed_images(x_img), result.embed_texts(x_txt)
    np.testing.assert_allclose(np.linalg.norm(e_img, axis=1), 1.0, atol=1e-5)
    assert mean_average_precision(e_img @ e_txt.T, y_new, y_new) > 0.8
    post = result.image_posteriors(x_img)
    np.testing.assert_allclose(post.sum(1), 1.0, atol=1e-5)  # softmax mode
    assert history_summary(result)["objectives"] == "supervised"


def test_early_stopping_stops_before_the_epoch_cap() -> None:
    img, txt, y = _data(96)
    cfg = HeadsConfig(dim=8, hidden=16, epochs=200, batch_size=32, patience=3, lr=1e-2)
    result = train_heads(img, txt, y, cfg, progress=False)
    assert len(result.history) < 200
    assert len(result.history) - result.best_epoch == 3


def test_infonce_trains_without_labels() -> None:
    img, txt, _ = _data(96)
    obj = ObjectiveConfig(infonce=1.0, supervised=0.0, rank=0.0)
    cfg = HeadsConfig(dim=8, hidden=16, epochs=5, batch_size=32, objectives=obj)
    result = train_heads(img, txt, None, cfg, progress=False)
    assert len(result.history) >= 1


def test_bad_input_is_refused() -> None:
    img, txt, y = _data(64)
    with pytest.raises(TrainingError):
        train_heads(img, txt[:10], y, progress=False)
    with pytest.raises(TrainingError):
        train_heads(img, txt, None, HeadsConfig(batch_size=16), progress=False)  # needs labels
    bad = img.copy()
    bad[0, 0] = np.nan
    with pytest.raises(TrainingError):
        train_heads(bad, txt, y, HeadsConfig(batch_size=16), progress=False)
    with pytest.raises(TrainingError):
        HeadsConfig(dropout=1.5)
