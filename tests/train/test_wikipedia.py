"""``crossfeed eval wikipedia``: data discovery, splits, CLI, and the CCA reproduction.

The CCA test runs the real benchmark files (closed form, ~2 s): it reproduces
the published baseline and so checks the mAP code end to end. It is skipped
only when the benchmark data is not on this machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from crossfeed.ops.cli import main
from crossfeed.train import wikipedia as wiki
from crossfeed.train.exceptions import DatasetFormatError, DatasetNotFoundError


def _real_data_dir() -> Path | None:
    try:
        return wiki.find_data_dir()
    except DatasetNotFoundError:
        return None


REAL = _real_data_dir()
# A checkout without the shared data skips these; CI has the data, so there they must run.
needs_data = pytest.mark.skipif(
    REAL is None and not os.environ.get("CI"), reason="Wikipedia benchmark data not present"
)


def _fake_data(root: Path, n_tr: int = wiki.N_TRAIN, n_te: int = wiki.N_TEST) -> Path:
    rng = np.random.default_rng(0)
    scipy.io.savemat(
        root / wiki.FEATURES_FILE,
        {
            "I_tr": rng.dirichlet(np.ones(128), n_tr),
            "T_tr": rng.dirichlet(np.ones(10), n_tr),
            "I_te": rng.dirichlet(np.ones(128), n_te),
            "T_te": rng.dirichlet(np.ones(10), n_te),
        },
    )
    for name, n in ((wiki.TRAIN_LIST, n_tr), (wiki.TEST_LIST, n_te)):
        lines = [f"t{i} i{i} {i % 10 + 1}" for i in range(n)]
        (root / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@needs_data
def test_eval_cca_reproduces_the_published_baseline(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "wikipedia", "--method", "cca", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dataset"] == "wikipedia" and out["method"] == "cca"
    assert out["split"] == "standard"
    # Published (Rasiwasia et al. 2010): 0.249 / 0.196.
    assert out["map_image_to_text"] == pytest.approx(0.24, abs=0.02)
    assert out["map_text_to_image"] == pytest.approx(0.19, abs=0.02)
    for k in (1, 5, 10):
        assert 0.0 <= out[f"r{k}_image_to_text"] <= 1.0
    assert out["r1_text_to_image"] <= out["r5_text_to_image"] <= out["r10_text_to_image"]


@needs_data
def test_markdown_table_and_resplit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "wikipedia", "--method", "cca", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| method | split | mAP i→t | mAP t→i |")
    assert "| cca | seed=3 |" in out
    assert "at least one relevant item in the top k" in out


def test_resplit_keeps_sizes_pairs_and_is_seeded(tmp_path: Path) -> None:
    base = wiki.load_wikipedia(_fake_data(tmp_path))
    a, b, c = wiki.resplit(base, 1), wiki.resplit(base, 1), wiki.resplit(base, 2)
    assert len(a.labels_train) == wiki.N_TRAIN and len(a.labels_test) == wiki.N_TEST
    np.testing.assert_array_equal(a.image_test, b.image_test)
    assert not np.array_equal(a.image_test, c.image_test)
    # Rows stay paired: every (image, text, label) row comes from the standard data.
    pairs = {
        img.tobytes(): (txt.tobytes(), int(lab))
        for part in ("train", "test")
        for img, txt, lab in zip(
            getattr(base, f"image_{part}"),
            getattr(base, f"text_{part}"),
            getattr(base, f"labels_{part}"),
            strict=True,
        )
    }
    for img, txt, lab in zip(a.image_test, a.text_test, a.labels_test, strict=True):
        assert pairs[img.tobytes()] == (txt.tobytes(), int(lab))
    assert a.name == "seed=1"


def test_data_dir_from_env_and_clear_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(wiki.ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(DatasetNotFoundError, match=wiki.ENV_VAR):
        wiki.find_data_dir()
    assert main(["eval", "wikipedia", "--method", "cca"]) == 1
    assert wiki.ENV_VAR in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(wiki.ENV_VAR, str(empty))
    with pytest.raises(DatasetNotFoundError, match=r"raw_features\.mat"):
        wiki.load_wikipedia()


def test_malformed_data_is_refused(tmp_path: Path) -> None:
    _fake_data(tmp_path, n_tr=100)
    with pytest.raises(DatasetFormatError, match="I_tr"):
        wiki.load_wikipedia(tmp_path)


def test_cli_refuses_unknown_method_and_bad_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(_fake_data(tmp_path))
    assert main(["eval", "wikipedia", "--data", data, "--method", "nope"]) == 1
    assert "unknown method" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "wikipedia", "--data", data, "--seed", "-1"])


def test_cca_on_fake_data_is_near_chance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Features unrelated to the labels: mAP must sit at chance (~0.1), not above.
    data = str(_fake_data(tmp_path))
    assert main(["eval", "wikipedia", "--data", data, "--method", "cca", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["map_image_to_text"] == pytest.approx(0.1, abs=0.03)
