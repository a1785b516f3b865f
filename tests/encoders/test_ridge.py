"""Bootstrap ridge head: the solver on synthetic data, then end to end on a tiny corpus."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from crossfeed.core.settings import Settings
from crossfeed.encoders.exceptions import TrainingError
from crossfeed.encoders.model import SharedSpaceEmbedder
from crossfeed.encoders.versions import list_versions, load_heads
from crossfeed.train.features import extract_features
from crossfeed.train.ridge import _group_folds, fit_bootstrap_head, fit_ridge


def _synthetic(n: int, d: int, noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((d, 8))
    x = rng.standard_normal((n, d)) + 1.5
    clean = x @ w + 2.0
    y = clean + noise * rng.standard_normal(clean.shape) * np.abs(clean).mean()
    return x, y, w


def test_ridge_recovers_a_linear_map() -> None:
    # Unit-norm inputs through a norm-preserving map give unit-norm targets, so the
    # row normalisation of y keeps the problem exactly linear.
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((32, 32)))
    w = q[:20]  # (20, 32) with w @ w.T = I
    x = rng.standard_normal((300, 20))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    fit = fit_ridge(x, x @ w, n_folds=5)
    assert np.abs(fit.weight - w).max() < 1e-3 and np.abs(fit.bias).max() < 1e-3
    assert fit.metrics["cv_cosine"] > 0.999 and fit.metrics["cv_recall_at_1"] > 0.95
    assert fit.metrics["alpha_relative"] <= 1e-3  # no noise -> hardly any shrinkage


def test_ridge_picks_more_shrinkage_for_noisier_data() -> None:
    quiet = fit_ridge(*_synthetic(80, 60, noise=0.05)[:2])
    noisy = fit_ridge(*_synthetic(80, 60, noise=1.0)[:2])
    assert noisy.alpha > quiet.alpha
    assert not noisy.metrics["alpha_at_grid_edge"]  # an interior optimum, not a grid edge
    best = int(np.argmax(noisy.cv_cosine))
    assert (
        noisy.cv_cosine[best] > noisy.cv_cosine[0] and noisy.cv_cosine[best] > noisy.cv_cosine[-1]
    )


def test_ridge_dual_form_when_fewer_rows_than_features() -> None:
    x, y, _ = _synthetic(40, 200, noise=0.0, seed=2)
    fit = fit_ridge(x, y, n_folds=4)
    assert fit.weight.shape == (200, 8) and fit.metrics["train_cosine"] > 0.99


def test_group_folds_keep_posts_together() -> None:
    groups = [f"p{i // 3}" for i in range(30)]
    folds = _group_folds(groups, 4, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(30))
    for fold in folds:
        members = {groups[i] for i in fold}
        assert all(groups.count(g) == sum(groups[i] == g for i in fold) for g in members)


def test_ridge_refuses_bad_data() -> None:
    with pytest.raises(TrainingError):
        fit_ridge(np.ones((3, 4)), np.ones((3, 2)))
    with pytest.raises(TrainingError, match="constant"):
        fit_ridge(np.ones((20, 4)), np.random.default_rng(0).random((20, 2)))
    with pytest.raises(TrainingError, match="NaN"):
        fit_ridge(np.full((20, 4), np.nan), np.ones((20, 2)))
    with pytest.raises(TrainingError, match="2\\+ posts"):
        fit_ridge(np.random.default_rng(0).random((20, 4)), np.ones((20, 2)), groups=["a"] * 20)


# --------------------------------------------------------------- end to end

COLORS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 50, 220)}
SHAPES = ("circle", "square")


def _draw(color: tuple[int, int, int], shape: str, jitter: int) -> Image.Image:
    image = Image.new("RGB", (128, 128), (255, 255, 255))
    box = (20 + jitter, 24, 100 + jitter, 104)
    draw = ImageDraw.Draw(image)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=color)
    return image


def _post(pid: str, text: str, media: list[dict]) -> str:
    return json.dumps(
        {
            "id": pid,
            "source": "test",
            "author": "a",
            "created_at": datetime(2025, 1, 1, tzinfo=UTC).isoformat(),
            "text": text,
            "media": media,
        }
    )


@pytest.fixture()
def corpus(tmp_path: Path, make_video) -> Path:
    media_dir = tmp_path / "media"
    media_dir.mkdir()
    lines = []
    for name, rgb in COLORS.items():
        for shape in SHAPES:
            for k in range(3):
                pid = f"{name}-{shape}-{k}"
                image = _draw(rgb, shape, jitter=4 * k)
                if k == 2:  # inline media
                    buf = io.BytesIO()
                    image.save(buf, format="PNG")
                    item = {
                        "kind": "image",
                        "data_base64": base64.b64encode(buf.getvalue()).decode(),
                    }
                else:
                    image.save(media_dir / f"{pid}.png")
                    item = {"kind": "image", "path": f"media/{pid}.png"}
                lines.append(_post(pid, f"a {name} {shape} on white", [item]))
    (media_dir / "clip.mp4").write_bytes(make_video(seconds=1.0))
    lines.append(_post("vid", "a short red clip", [{"kind": "video", "path": "media/clip.mp4"}]))
    (media_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    lines.append(_post("bad", "broken image", [{"kind": "image", "path": "media/broken.png"}]))
    lines.append(_post("out", "escape", [{"kind": "image", "path": "../outside.png"}]))
    lines.append(_post("url", "remote", [{"kind": "image", "url": "https://example.com/a.png"}]))
    lines.append('{"id": "no-source"}')
    path = tmp_path / "posts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_fit_bootstrap_head_end_to_end(
    corpus: Path, embedder: SharedSpaceEmbedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings()
    settings.encoder = embedder.settings.model_copy(update={"models_dir": tmp_path / "models"})
    version = fit_bootstrap_head(corpus, settings, embedder=embedder, n_folds=3, progress=False)

    [info] = list_versions(tmp_path / "models")
    assert info.version == version and version.startswith("ridge-")
    cfg = info.config
    assert cfg["heads"]["text"]["kind"] == "identity"
    assert cfg["heads"]["image"] == {"kind": "linear", "in_dim": 1280, "out_dim": 384}
    assert cfg["towers"]["image"] == "efficientnet-lite0"
    metrics = cfg["metrics"]
    assert metrics["n_pairs"] == 19 and metrics["n_video_pairs"] == 1
    assert metrics["skipped"] == {
        "invalid_post": 1,
        "media_unreadable": 1,
        "url_media_not_fetched": 1,
        "media_decode": 1,
    }
    assert len(cfg["data_hash"]) == 64 and metrics["alpha"] > 0

    # With the fitted head, a training image is nearest to its own caption.
    heads = load_heads(tmp_path / "models", version)
    captions = [f"a {n} {s} on white" for n in COLORS for s in SHAPES]
    text_vecs = heads.project("text", embedder.text_features(captions))
    images = [_draw(rgb, s, 0) for rgb in COLORS.values() for s in SHAPES]
    image_vecs = heads.project("image", embedder.image_features(images))
    hits = np.argmax(image_vecs @ text_vecs.T, axis=1) == np.arange(len(captions))
    assert hits.mean() >= 0.5  # chance is 1/6

    # Second run: everything comes from the feature cache, same training data.
    assert (corpus.parent / "posts.jsonl.features.npz").is_file()

    def _no_tower(*_a, **_k):
        raise AssertionError("tower called despite a warm cache")

    monkeypatch.setattr(embedder, "image_features", _no_tower)
    monkeypatch.setattr(embedder, "text_features", _no_tower)
    monkeypatch.setattr(embedder, "video_features", _no_tower)
    again = extract_features(corpus, embedder, progress=False)
    assert again.data_hash == cfg["data_hash"] and len(again) == 19


def test_no_usable_pairs_is_a_training_error(tmp_path: Path, embedder: SharedSpaceEmbedder) -> None:
    path = tmp_path / "posts.jsonl"
    path.write_text(_post("t", "text only", []) + "\n")
    with pytest.raises(TrainingError, match="no usable"):
        extract_features(path, embedder, progress=False)
