"""The real towers (MiniLM, EfficientNet-Lite0) behind SharedSpaceEmbedder."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from crossfeed.core.settings import EncoderSettings, Settings
from crossfeed.encoders.exceptions import MediaDecodeError, ModelLoadError
from crossfeed.encoders.heads import FALLBACK_VERSION, HeadSpec, ProjectionHead
from crossfeed.encoders.image import ImageTower, parse_image_model
from crossfeed.encoders.model import SharedSpaceEmbedder, load_embedder, resolve_device
from crossfeed.encoders.text import TextTower
from crossfeed.encoders.versions import save_heads
from crossfeed.exceptions import ConfigError


def _shape_image(color: tuple[int, int, int], shape: str, size: int = 160) -> Image.Image:
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    box = (size // 5, size // 5, 4 * size // 5, 4 * size // 5)
    if shape == "circle":
        draw.ellipse(box, fill=color)
    else:
        draw.rectangle(box, fill=color)
    return image


def _assert_unit(x: np.ndarray, dim: int) -> None:
    assert x.dtype == np.float32 and x.shape[1] == dim
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)


def test_similar_sentences_are_closer(embedder: SharedSpaceEmbedder) -> None:
    v = embedder.embed_texts(
        [
            "A dog is running on the beach.",
            "A puppy plays in the sand by the sea.",
            "The central bank raised interest rates again.",
            "Inflation worries push the Fed to hike rates.",
        ]
    )
    _assert_unit(v, 384)
    sims = v @ v.T
    assert sims[0, 1] > sims[0, 2] + 0.3 and sims[0, 1] > sims[0, 3] + 0.3
    assert sims[2, 3] > sims[2, 0] + 0.3
    assert embedder.version == FALLBACK_VERSION and embedder.dim == 384


def test_text_features_are_raw_tower_output(embedder: SharedSpaceEmbedder) -> None:
    feats = embedder.text_features(["hello world", ""])
    assert feats.shape == (2, 384) and feats.dtype == np.float32
    # The same batch: int8 text graphs quantize activations per batch, so a text's vector
    # moves slightly (cosine ~0.99) with the texts batched beside it.
    np.testing.assert_allclose(embedder.embed_texts(["hello world", ""]), feats, atol=1e-5)
    assert embedder.text_features([]).shape == (0, 384)


def test_image_features_shape_and_determinism(embedder: SharedSpaceEmbedder) -> None:
    images = [_shape_image((220, 30, 30), "circle"), _shape_image((30, 30, 220), "square", 300)]
    a = embedder.image_features(images)
    b = embedder.image_features(list(reversed(images)))[::-1]
    assert a.shape == (2, 1280) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # batch order does not matter
    assert not np.allclose(a[0], a[1], atol=1e-3)
    _assert_unit(embedder.embed_images(images), 384)


def test_transparent_image_is_seen_on_white(embedder: SharedSpaceEmbedder) -> None:
    rgba = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).ellipse((32, 32, 128, 128), fill=(220, 30, 30, 255))
    on_white = _shape_image((220, 30, 30), "circle")
    on_black = Image.new("RGB", (160, 160), (0, 0, 0))
    ImageDraw.Draw(on_black).ellipse((32, 32, 128, 128), fill=(220, 30, 30))
    f = embedder.image_features([rgba, on_white, on_black])
    assert np.abs(f[0] - f[1]).max() < 1e-4
    assert np.abs(f[0] - f[2]).max() > 1e-2


def test_similar_images_are_closer(embedder: SharedSpaceEmbedder) -> None:
    f = embedder.image_features(
        [
            _shape_image((220, 30, 30), "circle"),
            _shape_image((200, 40, 40), "circle", 200),
            _shape_image((30, 200, 30), "square"),
        ]
    )
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    assert f[0] @ f[1] > f[0] @ f[2]


def test_video_embedding_pools_frames(embedder: SharedSpaceEmbedder, make_video) -> None:
    frames = embedder.decode_video(make_video(seconds=3.0))
    images = [im for _, im in frames]
    assert 1 <= len(frames) <= embedder.settings.video_max_frames
    per_frame = embedder.embed_video_frames(images)
    _assert_unit(per_frame, 384)
    assert per_frame.shape[0] == len(images)
    pooled = embedder.video_features([images])
    np.testing.assert_allclose(pooled[0], embedder.image_features(images).mean(axis=0), rtol=1e-4)
    video = embedder.embed_videos([images, images[:1]])
    _assert_unit(video, 384)
    np.testing.assert_allclose(video[1], per_frame[0], atol=1e-5)
    with pytest.raises(MediaDecodeError):
        embedder.embed_videos([[]])


def test_decode_image_uses_settings_limits(embedder: SharedSpaceEmbedder, png_bytes) -> None:
    big = png_bytes(Image.new("RGB", (2, 2)))
    assert embedder.decode_image(big).size == (2, 2)
    with pytest.raises(MediaDecodeError):
        embedder.decode_image(b"\x89PNG\r\n\x1a\n garbage")


def test_fitted_head_is_used_and_swappable(embedder: SharedSpaceEmbedder, tmp_path: Path) -> None:
    weight = np.random.default_rng(0).standard_normal((1280, 384))
    heads = {
        "text": ProjectionHead(HeadSpec("identity", 384, 384)),
        "image": ProjectionHead.linear_from_numpy(weight, np.zeros(384)),
    }
    save_heads(tmp_path, heads, version="v-test", towers={"image": "efficientnet-lite0"})
    other = SharedSpaceEmbedder(embedder.settings, tmp_path)
    # Share the loaded towers instead of loading them again.
    other._text, other._image = embedder.text_tower, embedder.image_tower
    assert other.version == "v-test"
    image = _shape_image((10, 10, 10), "square")
    feats = embedder.image_features([image])
    want = feats @ weight
    np.testing.assert_allclose(
        other.embed_images([image]), want / np.linalg.norm(want), rtol=1e-4, atol=1e-5
    )
    assert other.reload_heads(FALLBACK_VERSION) == FALLBACK_VERSION
    assert other.version == FALLBACK_VERSION


def test_heads_load_once_under_concurrency(encoder_settings: EncoderSettings) -> None:
    emb = SharedSpaceEmbedder(encoder_settings, Path(encoder_settings.models_dir or "."))
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(emb.heads)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 8 and all(h is seen[0] for h in seen)


def test_load_embedder_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROSSFEED_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("CROSSFEED_DEVICE", "cpu")
    emb = load_embedder(Settings())
    assert emb.models_dir == tmp_path and emb.device == "cpu"
    assert emb._text is None and emb._image is None  # nothing loaded yet


def test_resolve_device() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(ConfigError):
        resolve_device("tpu")


def test_missing_models_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError):
        TextTower.load(str(tmp_path / "no-such-model"), "cpu")
    with pytest.raises(ModelLoadError, match="not found"):
        ImageTower.load(str(tmp_path / "missing.pth"), "cpu")
    bad = tmp_path / "junk.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError):
        ImageTower.load(str(bad), "cpu")


def test_custom_image_checkpoint_loads(tmp_path: Path, embedder: SharedSpaceEmbedder) -> None:
    import torch

    ckpt = tmp_path / "finetuned.pth"
    torch_tower = getattr(embedder.image_tower, "torch_tower", embedder.image_tower)
    state = {f"module.{k}": v for k, v in torch_tower._model.state_dict().items()}
    torch.save({"state_dict": state}, ckpt)
    tower = ImageTower.load(str(ckpt), "cpu")  # architecture found by matching the weights
    assert tower.arch == "efficientnet-lite0" and tower.dim == 1280
    image = _shape_image((1, 2, 3), "circle")
    np.testing.assert_allclose(
        tower.features([image]), embedder.image_features([image]), rtol=1e-4, atol=1e-5
    )
    assert parse_image_model(f"efficientnet-lite2:{ckpt}") == ("efficientnet-lite2", ckpt)
    assert parse_image_model("/m/efficientnet-b3-ft.pth")[0] == "efficientnet-b3"


def test_reading_the_device_leaves_torch_threads_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread count is set once, when a tower loads, not as a side effect of `.device`."""
    import torch

    from crossfeed.encoders import text as text_mod

    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.setattr(text_mod.TextTower, "load", classmethod(lambda cls, name, dev: dev))
    monkeypatch.setenv("CROSSFEED_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("CROSSFEED_DEVICE", "cpu")
    monkeypatch.setenv("CROSSFEED_CPU_THREADS", "1")
    emb = load_embedder(Settings())
    assert emb.device == "cpu" and emb.info()["device"] == "cpu"
    assert calls == []
    assert emb.text_tower == "cpu"  # type: ignore[comparison-overlap]
    assert calls == [1]
