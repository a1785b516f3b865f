"""Training, saving and evaluating shared spaces on tiny data (fake towers, no model files)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from crossfeed.core.settings import EncoderSettings, Settings
from crossfeed.encoders.base import l2_normalize
from crossfeed.encoders.exceptions import TrainingError
from crossfeed.encoders.media import decode_image, decode_video
from crossfeed.encoders.model import SharedSpaceEmbedder
from crossfeed.encoders.versions import load_heads, load_vocab_for_version
from crossfeed.encoders.vocab import TagVocab, TagVocabConfig
from crossfeed.exceptions import InvalidInputError
from crossfeed.train.clipart_report import MIN_SCORE_GRID
from crossfeed.train.train_cmd import (
    add_train_command,
    parse_objectives,
    save_trained,
    train_space,
)
from crossfeed.train.train_data import TrainingData

TAGS = ["red", "green", "blue", "round", "square", "tbt"]


class FakeTowers:
    """Stands in for the production embedder in feature extraction: colours, word hashes."""

    def __init__(self, models_dir: Path) -> None:
        self.settings = EncoderSettings()
        self.models_dir = models_dir

    def decode_image(self, data: bytes) -> Image.Image:
        return decode_image(data, self.settings.max_media_bytes, self.settings.max_image_pixels)

    def decode_video(self, data: bytes) -> list[tuple[float, Image.Image]]:
        return decode_video(data, 1.0, 4, self.settings.max_media_bytes)

    def image_features(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = []
        for im in images:
            thumb = im.convert("RGB").resize((4, 4), Image.Resampling.BOX)
            out.append(np.asarray(thumb, dtype=np.float32).reshape(-1) / 255.0)
        return np.stack(out) if out else np.zeros((0, 48), np.float32)

    def video_features(self, videos: Sequence[Sequence[Image.Image]]) -> np.ndarray:
        return np.stack([self.image_features(frames).mean(0) for frames in videos])

    def text_features(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), 32), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                rng = np.random.default_rng(abs(hash(word)) % (2**32))
                out[i] += rng.standard_normal(32).astype(np.float32)
        return out

    def tower_id(self, tower: str) -> str:
        return "fake"

    class _Tower:
        model_id = "fake"

    text_tower = _Tower()
    image_tower = _Tower()


def _synthetic(n: int = 240, seed: int = 0) -> TrainingData:
    """Rows whose tags are predictable from both sides (plus a noise tag, like #tbt)."""
    protos = np.random.default_rng(123)
    proto_img = protos.standard_normal((5, 24))
    proto_txt = protos.standard_normal((5, 16))
    rng = np.random.default_rng(seed)
    tags: list[list[str]] = []
    img, txt = [], []
    for _ in range(n):
        on = rng.random(5) < 0.35
        if not on.any():
            on[rng.integers(5)] = True
        img.append(on @ proto_img + 0.3 * rng.standard_normal(24))
        txt.append(on @ proto_txt + 0.3 * rng.standard_normal(16))
        row = [TAGS[j] for j in np.flatnonzero(on)]
        tags.append(row + (["tbt"] if rng.random() < 0.2 else []))
    ids = [f"p{i}" for i in range(n)]
    return TrainingData(
        post_ids=ids,
        image=np.asarray(img, np.float32),
        text=np.asarray(txt, np.float32),
        tags=tags,
        modalities=["image"] * n,
        media_refs=["x"] * n,
        data_hash="h",
    )


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models: one thread avoids OpenMP spinning against whatever else runs."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return _synthetic()


@pytest.fixture(scope="module")
def vocab(data: TrainingData) -> TagVocab:
    return TagVocab(TagVocabConfig(min_count=2, max_df=1.0)).fit(data.tags)


@pytest.mark.parametrize(
    ("space", "objectives"),
    [
        ("tags", {"bce": 1.0}),
        ("tags", {"bce": 1.0, "rank": 0.5, "infonce": 0.2, "pairwise": 0.2}),
        ("embedding", {"bce": 1.0, "infonce": 1.0}),
    ],
)
def test_a_few_steps_lower_the_loss(
    data: TrainingData, vocab: TagVocab, space: str, objectives: dict[str, float], tmp_path: Path
) -> None:
    overrides = {"patience": 50, "batch_size": 32}
    trained = train_space(
        data,
        vocab,
        space=space,
        objectives=objectives,
        epochs=8,
        progress=False,
        plot_path=tmp_path / "curves.png",
        overrides=overrides,
    )
    losses = [h["train_loss"] for h in trained.history]
    assert len(losses) == 8
    assert losses[-1] < 0.9 * losses[0]
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert trained.summary["best_epoch"] >= 1


def test_text_queries_find_images_with_their_tags(data: TrainingData, vocab: TagVocab) -> None:
    trained = train_space(data, vocab, epochs=30, progress=False, overrides={"batch_size": 32})
    test = _synthetic(120, seed=1)
    img = l2_normalize(trained.heads["image"](_t(test.image)).detach().numpy())
    txt = l2_normalize(trained.heads["text"](_t(test.text)).detach().numpy())
    y = vocab.transform(test.tags)
    nearest = np.argmax(txt @ img.T, axis=1)
    shared = np.mean((y * y[nearest]).sum(1) > 0)
    chance = np.mean((y * y[np.random.default_rng(0).permutation(len(y))]).sum(1) > 0)
    assert shared > 0.85 and shared > chance + 0.2


def _t(x: np.ndarray):  # type: ignore[no-untyped-def]
    import torch

    return torch.from_numpy(x)


@pytest.mark.parametrize("topics", [0.0, 0.5])
def test_a_saved_model_reloads_and_embeds_identically(
    data: TrainingData, vocab: TagVocab, tmp_path: Path, topics: float
) -> None:
    trained = train_space(
        data, vocab, epochs=3, progress=False, overrides={"batch_size": 32}, topics=topics
    )
    version = save_trained(
        tmp_path, trained, vocab, data_hash="abc", towers={"text": "t", "image": "i"}
    )
    loaded = load_heads(tmp_path, "latest", text_dim=16, image_dim=24)
    assert loaded.version == version and loaded.dim == len(vocab) + vocab.n_topics
    assert (vocab.n_topics > 0) == (topics > 0)
    assert loaded.heads["image"].spec.kind == "tag_posterior"
    assert loaded.config["data_hash"].startswith("abc:")
    for key, x in (("image", data.image[:10]), ("text", data.text[:10])):
        expected = l2_normalize(trained.heads[key].eval()(_t(x)).detach().numpy())
        np.testing.assert_allclose(loaded.project(key, x), expected, atol=1e-6)
    frames = data.image[:2]
    np.testing.assert_allclose(loaded.project("video", frames), loaded.project("image", frames))
    saved_vocab = load_vocab_for_version(tmp_path, version)
    assert saved_vocab is not None and saved_vocab.tags == vocab.tags
    assert saved_vocab.topics == vocab.topics

    # The serving path: vectors plus each item's tag posterior, from one feature pass.
    class Serving(SharedSpaceEmbedder):
        def image_features(self, images: Sequence[Any]) -> np.ndarray:
            return np.stack(images)

        def embed_images(self, images: Sequence[Any]) -> np.ndarray:
            raise AssertionError("the tag-space path computes features once")

    serving = Serving(EncoderSettings(), tmp_path)
    serving._heads, serving._device = loaded, "cpu"
    assert loaded.tag_vocab is not None and loaded.tag_vocab.tags == vocab.tags
    vectors, posteriors = serving.embed_media_with_posterior("image", list(data.image[:3]))
    np.testing.assert_allclose(vectors, loaded.project("image", data.image[:3]), atol=1e-6)
    assert posteriors is not None and len(posteriors) == 3
    assert set(posteriors[0]) == set(vocab.tags)
    assert all(0.0 <= p <= 1.0 for p in posteriors[0].values())


def test_objectives_are_parsed_and_checked() -> None:
    assert parse_objectives("bce, rank", "1,0.5") == {"bce": 1.0, "rank": 0.5}
    assert parse_objectives("infonce", None) == {"infonce": 1.0}
    for names, weights in (("bce,foo", None), ("bce,bce", None), ("bce", "1,2"), ("bce", "-1")):
        with pytest.raises(InvalidInputError):
            parse_objectives(names, weights)


def _tiny_corpus(out: Path) -> Path:
    from crossfeed.corpus.build import build_corpus

    corpus = build_corpus(out, clipart_root=None, seed=1, progress=False, fallback_per_category=10)
    return corpus.posts_path


def test_train_command_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    posts = _tiny_corpus(tmp_path / "corpus")
    monkeypatch.setenv("CROSSFEED_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("CROSSFEED_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("CROSSFEED_MEDIA_ROOTS", json.dumps([str(posts.parent)]))
    fake = FakeTowers(tmp_path / "models")
    monkeypatch.setattr("crossfeed.encoders.model.load_embedder", lambda settings: fake)
    parser = argparse.ArgumentParser()
    add_train_command(parser.add_subparsers())
    args = parser.parse_args(
        [
            "train",
            "--posts",
            str(posts),
            "--epochs",
            "3",
            "--min-tag-count",
            "2",
            "--topics",
            "0.3",
            "--no-progress",
        ]
    )
    assert args.func(args) == 0
    heads = load_heads(tmp_path / "models", "latest", text_dim=32, image_dim=48)
    assert heads.heads["text"].spec.kind == "tag_posterior"
    assert (tmp_path / "state" / "train" / "curves.png").is_file()
    bad = parser.parse_args(["train", "--posts", str(tmp_path / "missing.jsonl")])
    with pytest.raises(InvalidInputError):
        bad.func(bad)


def test_clipart_eval_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crossfeed.train.clipart import ClipartEvalOptions, run_clipart_eval

    posts = _tiny_corpus(tmp_path / "corpus")
    monkeypatch.setenv("CROSSFEED_MODELS_DIR", str(tmp_path / "models"))
    settings = Settings()
    fake = FakeTowers(tmp_path / "models")
    opts = ClipartEvalOptions(
        out_dir=tmp_path / "eval",
        corpus=posts.parent,
        test_fraction=0.3,
        seeds=(0, 1),
        epochs=3,
        progress=False,
    )
    report = run_clipart_eval(opts, settings, embedder=fake)  # type: ignore[arg-type]
    assert set(report["methods"]) == {"lsq", "ridge", "cca", "embedding", "tags"}
    tags = report["methods"]["tags"]
    assert tags["summary"]["t2i_map"]["n"] == 2 and len(tags["runs"]) == 2
    for method in report["methods"].values():
        s = method["summary"]
        assert 0.0 <= s["t2i_map"]["mean"] <= 1.0 and 0.0 <= s["i2t_map"]["mean"] <= 1.0
        assert 0.0 <= s["topic_map"]["mean"] <= 1.0
    assert "| tags |" in report["table"] and "t→i mAP" in report["table"]
    # The stream step's min_score: chosen once per method on the carve-out, applied to test.
    for method in report["methods"].values():
        s, choice = method["summary"], method["stream_validation"]
        assert choice["min_score"] in MIN_SCORE_GRID and len(choice["sweep"]) == len(MIN_SCORE_GRID)
        assert s["stream_min_score"]["mean"] == choice["min_score"]
        assert s["stream_tags_per_item"]["mean"] <= s["stream_top_k_tags_per_item"]["mean"] <= 5
        assert 0.0 < s["stream_top_k_coverage"]["mean"] <= 1.0
    assert "| tags |" in report["stream_table"]
    assert "min_score (validation)" in (tmp_path / "eval" / "results.md").read_text()
    assert report["target"]["best_baseline"] in {"lsq", "ridge", "cca"}
    assert (tmp_path / "eval" / "contact_sheet.png").stat().st_size > 1000
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["seeds"] == [0, 1]
    saved = load_heads(tmp_path / "models", report["saved_version"], text_dim=32, image_dim=48)
    assert saved.version == report["saved_version"]


@pytest.mark.integration
@pytest.mark.usefixtures("engines")
def test_posts_are_read_back_from_kafka_without_a_consumer_group(
    unique_name: Callable[[str], str],
) -> None:
    from crossfeed.core.schema import Post
    from crossfeed.ops.data.produce import produce
    from crossfeed.train.train_data import read_posts_from_kafka

    topic = unique_name("clip_train")
    posts = [
        Post(
            id=f"k{i}",
            source="test",
            author="a",
            created_at="2024-01-01T00:00:00Z",
            text=f"post {i} #tag{i % 3}",
        )
        for i in range(12)
    ]
    settings = Settings()
    assert produce(posts, settings.kafka, topic, progress=False) == 12
    got = read_posts_from_kafka(settings, topic, max_posts=100, idle_s=3.0)
    assert sorted(p.id for p in got) == sorted(p.id for p in posts)
    assert len(read_posts_from_kafka(settings, topic, max_posts=5, idle_s=3.0)) == 5
    with pytest.raises(TrainingError):
        read_posts_from_kafka(settings, unique_name("clip_missing"), max_posts=5, idle_s=1.0)
