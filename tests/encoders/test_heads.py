"""Versioned projection heads: save/load, "latest", fallback, integrity."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from crossfeed.encoders.exceptions import HeadVersionError
from crossfeed.encoders.heads import FALLBACK_VERSION, HeadSpec, ProjectionHead, validate_version
from crossfeed.encoders.versions import fallback_heads, list_versions, load_heads, save_heads

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _heads(seed: int, image_kind: str = "linear") -> dict[str, ProjectionHead]:
    torch.manual_seed(seed)
    image = (
        ProjectionHead(HeadSpec("mlp", 12, 6, hidden=9))
        if image_kind == "mlp"
        else ProjectionHead(HeadSpec("linear", 12, 6))
    )
    return {"text": ProjectionHead(HeadSpec("linear", 8, 6)), "image": image}


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_save_load_roundtrip_embeds_identically(tmp_path: Path, kind: str) -> None:
    heads = _heads(1, kind)
    version = save_heads(
        tmp_path, heads, version="v1", data_hash="abc", metrics={"cv": np.float64(0.5)}, notes="n"
    )
    assert version == "v1"
    loaded = load_heads(tmp_path, "v1")
    rng = np.random.default_rng(0)
    img, txt = rng.standard_normal((5, 12)), rng.standard_normal((4, 8))
    for modality, feats, original in (
        ("image", img, heads["image"]),
        ("video", img, heads["image"]),
        ("text", txt, heads["text"]),
    ):
        got = loaded.project(modality, feats)
        with torch.no_grad():
            want = original(torch.from_numpy(feats.astype(np.float32))).numpy()
        want /= np.linalg.norm(want, axis=1, keepdims=True)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert got.dtype == np.float32
    assert loaded.dim == 6 and loaded.version == "v1"
    config = json.loads((tmp_path / "v1" / "config.json").read_text())
    assert config["data_hash"] == "abc" and config["metrics"] == {"cv": 0.5}
    assert config["heads"]["image"]["kind"] == kind and config["notes"] == "n"


def test_latest_is_newest_by_created_at_not_by_name(tmp_path: Path) -> None:
    save_heads(tmp_path, _heads(1), version="b-old", created_at=T0)
    save_heads(tmp_path, _heads(2), version="a-new", created_at=T0 + timedelta(days=1))
    save_heads(tmp_path, _heads(3), version="c-mid", created_at=T0 + timedelta(hours=1))
    assert [v.version for v in list_versions(tmp_path)] == ["a-new", "c-mid", "b-old"]
    assert load_heads(tmp_path).version == "a-new"
    assert load_heads(tmp_path, "b-old").version == "b-old"


def test_generated_version_ids_are_unique(tmp_path: Path) -> None:
    a = save_heads(tmp_path, _heads(1))
    b = save_heads(tmp_path, _heads(1))
    assert a != b and {v.version for v in list_versions(tmp_path)} == {a, b}


def test_fallback_when_no_version(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="crossfeed.encoders.heads"):
        heads = load_heads(tmp_path / "nothing-here")
    assert heads.version == FALLBACK_VERSION and heads.is_fallback
    assert any("meaningless" in r.getMessage() for r in caplog.records)
    assert heads.dim == 384
    text = np.random.default_rng(0).standard_normal((3, 384)).astype(np.float32)
    np.testing.assert_allclose(
        heads.project("text", text), text / np.linalg.norm(text, axis=1, keepdims=True), rtol=1e-5
    )
    image = np.random.default_rng(1).random((3, 1280)).astype(np.float32)
    out = heads.project("image", image)
    assert out.shape == (3, 384)
    # Fixed seed: the same in every process.
    np.testing.assert_array_equal(out, fallback_heads().project("image", image))


def test_fallback_by_name_and_sized_to_towers(tmp_path: Path) -> None:
    save_heads(tmp_path, _heads(1), version="v1")
    heads = load_heads(tmp_path, FALLBACK_VERSION, text_dim=16, image_dim=32)
    assert heads.version == FALLBACK_VERSION and heads.dim == 16
    assert heads.project("image", np.ones((1, 32))).shape == (1, 16)


def test_missing_version_raises(tmp_path: Path) -> None:
    save_heads(tmp_path, _heads(1), version="v1")
    with pytest.raises(HeadVersionError, match="not found"):
        load_heads(tmp_path, "v2")


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", ".hidden", "-x", "a" * 101, "..", "x y"])
def test_invalid_version_ids_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(HeadVersionError):
        validate_version(bad)
    with pytest.raises(HeadVersionError):
        save_heads(tmp_path, _heads(1), version=bad)


def test_existing_version_is_never_overwritten(tmp_path: Path) -> None:
    save_heads(tmp_path, _heads(1), version="v1")
    with pytest.raises(HeadVersionError, match="exists"):
        save_heads(tmp_path, _heads(2), version="v1")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_tampered_weights_fail_checksum(tmp_path: Path) -> None:
    save_heads(tmp_path, _heads(1), version="v1")
    weights = tmp_path / "v1" / "heads.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(HeadVersionError, match="checksum"):
        load_heads(tmp_path, "v1")


def test_broken_version_dirs_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    save_heads(tmp_path, _heads(1), version="good", created_at=T0)
    (tmp_path / "empty").mkdir()
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / "config.json").write_text("{not json")
    (tmp_path / "renamed").mkdir()
    (tmp_path / "renamed" / "config.json").write_text(
        (tmp_path / "good" / "config.json").read_text()
    )
    with caplog.at_level(logging.WARNING):
        assert [v.version for v in list_versions(tmp_path)] == ["good"]
    assert load_heads(tmp_path).version == "good"


def test_heads_must_share_output_dim(tmp_path: Path) -> None:
    heads = {
        "text": ProjectionHead(HeadSpec("identity", 8, 8)),
        "image": ProjectionHead(HeadSpec("linear", 12, 6)),
    }
    with pytest.raises(HeadVersionError, match="same dim"):
        save_heads(tmp_path, heads)
    with pytest.raises(HeadVersionError, match="'text' and an 'image'"):
        save_heads(tmp_path, {"text": heads["text"]})


def test_feature_dim_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    save_heads(tmp_path, _heads(1), version="v1")
    with pytest.raises(HeadVersionError, match="expects 12-d"):
        load_heads(tmp_path, "v1").project("image", np.ones((2, 13)))


def test_bad_specs_refused() -> None:
    with pytest.raises(HeadVersionError):
        HeadSpec("conv", 2, 2)
    with pytest.raises(HeadVersionError):
        HeadSpec("identity", 2, 3)
    with pytest.raises(HeadVersionError):
        HeadSpec("mlp", 2, 3)


def test_linear_from_numpy_matches_matmul() -> None:
    rng = np.random.default_rng(3)
    w, b, x = rng.standard_normal((5, 3)), rng.standard_normal(3), rng.standard_normal((4, 5))
    head = ProjectionHead.linear_from_numpy(w, b)
    with torch.no_grad():
        got = head(torch.from_numpy(x.astype(np.float32))).numpy()
    np.testing.assert_allclose(got, x @ w + b, rtol=1e-5, atol=1e-5)
