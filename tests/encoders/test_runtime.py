"""The towers under ONNX Runtime against torch, the runtime choice, the export cache and
the fallback to torch."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from crossfeed.core.settings import EncoderSettings
from crossfeed.encoders.exceptions import ModelLoadError
from crossfeed.encoders.image import ImageTower
from crossfeed.encoders.model import SharedSpaceEmbedder
from crossfeed.encoders.onnx_towers import OnnxImageTower, OnnxTextTower
from crossfeed.encoders.runtime import choose_runtime, weights_digest
from crossfeed.encoders.text import TextTower
from crossfeed.exceptions import ConfigError

CLIPART = Path("/usr/share/openclipart/png")

# Social posts as they reach the text tower: emoji, elongations, hashtags, typos, URLs,
# other scripts, and posts far over MiniLM's 256-token window.
NOISY_POSTS = [
    "omg my cat is sooooo cute 😻😻 #CatsOfInstagram #caturday",
    "sunset at the beach tonight 🌅🔥🔥 #SunsetBeach #nofilter",
    "ugh",
    "lol",
    "cant beleive the new phone lasts 2 days on one charge!!! http://t.co/xyz",
    "@bob@mastodon.social look at this 👀 dragon drawing #art #fantasyart",
    "Fußball heute Abend ⚽ mit den Jungs, danach Döner 🥙",
    "東京の桜がきれい 🌸 #sakura",
    "#ThrowbackThursday to the mountains 🏔️ hiking w/ the crew, best trip evr",
    "new recipe: vegan tacos 🌮 with lime + cilantro, sooo good. link in bio",
    "the central bank raised rates again smh 📉📉📉",
    "🐶",
    "rainy monday vibes ☔ coffee and a good book 📚 #cozy",
    "traffic jam on the highway for 2 hours 🚗🚗🚗 never again",
    " ".join(["long post about the river flood and rescue boats 🚤"] * 40),
    " ".join(f"word{i} #tag{i} 🔥" for i in range(400)),
]


def _real_images(n: int = 12) -> list[Image.Image]:
    """Clip art from Debian's openclipart-png (what the corpus is made of); drawn
    pictures with texture when it is not installed."""
    files = sorted(CLIPART.rglob("*.png"))[:: max(1, len(list(CLIPART.rglob("*.png"))) // n)]
    if files:
        return [Image.open(f) for f in files[:n]]
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        arr = rng.integers(0, 255, (180 + 7 * i, 240, 3), dtype=np.uint8)
        image = Image.fromarray(arr).filter(ImageFilter.GaussianBlur(3))
        ImageDraw.Draw(image).ellipse((20, 20, 150, 140), fill=(30 * i % 255, 90, 200))
        out.append(image)
    return out


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def text_tower() -> TextTower:
    return TextTower.load("", "cpu")


@pytest.fixture(scope="module")
def image_tower() -> ImageTower:
    return ImageTower.load("", "cpu")


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_image_graph_matches_torch_on_real_images(image_tower: ImageTower, cache_dir: Path) -> None:
    onnx = OnnxImageTower.from_torch(image_tower, cache_dir, threads=1)
    images = _real_images()
    want = image_tower.features(images)
    got = onnx.features(images, batch_size=5)  # batches of several sizes, dynamic axis
    assert got.shape == want.shape == (len(images), 1280) and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-3 * np.abs(want).max()
    assert _cos(got, want).min() > 0.99999
    assert onnx.features([]).shape == (0, 1280)
    assert (onnx.model_id, onnx.dim, onnx.runtime) == (image_tower.model_id, 1280, "onnx")


def test_text_graph_fp32_matches_torch(text_tower: TextTower, cache_dir: Path) -> None:
    onnx = OnnxTextTower.from_torch(text_tower, cache_dir, threads=1, quant="none")
    want = text_tower.features(NOISY_POSTS)
    got = onnx.features(NOISY_POSTS, batch_size=4)
    assert got.shape == want.shape == (len(NOISY_POSTS), 384)
    assert _cos(got, want).min() > 0.9999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-4)  # Normalize ran


def test_text_graph_int8_stays_close_to_torch(text_tower: TextTower, cache_dir: Path) -> None:
    """The careful recipe (FFN down-projections fp32) keeps mean cosine >= 0.99 even on
    raw posts; the fast one (fused attention, every weight matrix int8) >= 0.985 on posts
    as the embed stage hands them over (cleaned: emoji as words, no URLs), one-word posts
    ("ugh", "lol") being the farthest (~0.965)."""
    from crossfeed.core.text import clean_text

    fast = OnnxTextTower.from_torch(text_tower, cache_dir, threads=1, quant="int8")
    assert fast.runtime == "onnx-int8" and fast.path.name.endswith(".int8.onnx")
    cleaned = [clean_text(t) for t in NOISY_POSTS]
    cos = _cos(fast.features(cleaned), text_tower.features(cleaned))
    assert cos.mean() >= 0.985 and cos.min() >= 0.95, cos

    careful = OnnxTextTower.from_torch(text_tower, cache_dir, threads=1, quant="int8-ffn-fp32")
    assert careful.runtime == "onnx-int8-ffn-fp32"
    cos = _cos(careful.features(NOISY_POSTS), text_tower.features(NOISY_POSTS))
    assert cos.mean() >= 0.99 and cos.min() >= 0.95, cos


def test_export_leaves_the_torch_model_as_it_was(text_tower: TextTower, tmp_path: Path) -> None:
    """Export traces with eager attention; the torch tower keeps its own afterwards."""
    auto = text_tower._model[0].auto_model
    before = auto.config._attn_implementation
    OnnxTextTower.from_torch(text_tower, tmp_path, threads=1, quant="none")
    assert auto.config._attn_implementation == before


def test_long_posts_truncate_like_torch(text_tower: TextTower, cache_dir: Path) -> None:
    """Past the 256-token window only the start counts, exactly as in torch; order and
    batching do not change a text's vector."""
    onnx = OnnxTextTower.from_torch(text_tower, cache_dir, threads=1, quant="none")
    long = NOISY_POSTS[-1]
    assert len(text_tower._model.tokenizer(long)["input_ids"]) > 256
    extended = long + " completely different ending about quantum physics" * 20
    a, b = onnx.features([long, extended, "lol"], batch_size=3)[:2]
    assert float(a @ b) > 0.9999  # the added tail is past the window
    alone = onnx.features(["lol"])[0]
    np.testing.assert_allclose(onnx.features([long, "lol"])[1], alone, atol=1e-5)


def test_export_is_cached_by_weights(image_tower: ImageTower, cache_dir: Path) -> None:
    first = OnnxImageTower.from_torch(image_tower, cache_dir, threads=1)
    stamp = first.path.stat().st_mtime_ns
    again = OnnxImageTower.from_torch(image_tower, cache_dir, threads=1)
    assert again.path == first.path and again.path.stat().st_mtime_ns == stamp
    assert not list(cache_dir.glob(".export-*"))  # no temporary leftovers

    import torch

    model = image_tower._model
    before = weights_digest(model, "image")
    with torch.no_grad():
        model._bn1.bias[0] += 1.0
    try:
        assert weights_digest(model, "image") != before
    finally:
        with torch.no_grad():
            model._bn1.bias[0] -= 1.0
    assert weights_digest(model, "image") == before


def test_session_threads_follow_setting(image_tower: ImageTower, cache_dir: Path) -> None:
    onnx = OnnxImageTower.from_torch(image_tower, cache_dir, threads=1)
    options = onnx._session.get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1


def test_choose_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    assert choose_runtime("auto", "cpu").name == "onnx"
    assert choose_runtime("torch", "cpu").name == "torch"
    assert choose_runtime("auto", "cuda").name == "torch"  # GPUs keep torch
    with pytest.raises(ConfigError, match="CPU"):
        choose_runtime("onnx", "cuda:0")
    with pytest.raises(ConfigError):
        choose_runtime("tensorrt", "cpu")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    choice = choose_runtime("auto", "cpu")
    assert choice.name == "torch" and "not installed" in choice.reason
    with pytest.raises(ConfigError, match="not installed"):
        choose_runtime("onnx", "cpu")


def _embedder(tmp_path: Path, runtime: str) -> SharedSpaceEmbedder:
    settings = EncoderSettings(
        device="cpu", cpu_threads=1, runtime=runtime, models_dir=tmp_path, onnx_cache_dir=None
    )
    return SharedSpaceEmbedder(settings, tmp_path)


def test_embedder_runs_towers_on_the_chosen_runtime(tmp_path: Path) -> None:
    emb = _embedder(tmp_path, "auto")
    assert isinstance(emb.image_tower, OnnxImageTower)
    assert (tmp_path / ".onnx").is_dir()  # the cache lives beside the head versions
    info = emb.info()
    assert info["runtime"] == "onnx" and info["image_runtime"] == "onnx"
    assert isinstance(_embedder(tmp_path, "torch").image_tower, ImageTower)


def test_embedder_falls_back_to_torch_when_onnxruntime_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    emb = _embedder(tmp_path, "auto")
    assert isinstance(emb.image_tower, ImageTower)
    assert emb.info()["runtime_reason"] == "auto: onnxruntime is not installed"


def test_embedder_falls_back_to_torch_when_export_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(OnnxImageTower, "from_torch", classmethod(broken))
    emb = _embedder(tmp_path, "auto")
    with caplog.at_level(logging.WARNING, logger="crossfeed.encoders.model"):
        tower = emb.image_tower
    assert isinstance(tower, ImageTower)
    assert "exporter exploded" in caplog.text and "stays on torch" in caplog.text
    assert emb.info()["runtime_fallbacks"] == {"image": "RuntimeError: exporter exploded"}
    assert emb.image_features([Image.new("RGB", (64, 64), "red")]).shape == (1, 1280)

    with pytest.raises(ModelLoadError, match="exporter exploded"):
        _ = _embedder(tmp_path, "onnx").image_tower  # asked for explicitly: an error


@pytest.mark.parametrize(
    ("env", "want"), [({}, "onnx"), ({"CROSSFEED_ENCODER_RUNTIME": "torch"}, "torch")]
)
def test_settings_choose_the_runtime_of_every_embedder(
    env: dict[str, str], want: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers, the API and reindex build their embedder with load_embedder(settings)."""
    from crossfeed.core.settings import Settings
    from crossfeed.encoders.model import load_embedder

    monkeypatch.setenv("CROSSFEED_DEVICE", "cpu")
    monkeypatch.setenv("CROSSFEED_MODELS_DIR", str(tmp_path))
    monkeypatch.delenv("CROSSFEED_ENCODER_RUNTIME", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    emb = load_embedder(Settings())
    assert emb.runtime.name == want
    assert emb._text is None and emb._image is None  # choosing loads nothing
    with pytest.raises(ValueError):
        monkeypatch.setenv("CROSSFEED_ONNX_TEXT_QUANT", "int4")
        Settings()
