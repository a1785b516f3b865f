"""``crossfeed bench encoders``: torch and ONNX Runtime measured side by side on real
corpus material (real towers; rates are reported, never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crossfeed.core.settings import Settings
from crossfeed.ops.bench.corpus import bench_corpus
from crossfeed.ops.bench.encoders import run_encoders_bench
from crossfeed.ops.bench.output import write_report

pytestmark = pytest.mark.slow


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("CROSSFEED_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("CROSSFEED_DEVICE", "cpu")
    monkeypatch.setenv("CROSSFEED_CPU_THREADS", "1")
    return Settings()


@pytest.mark.parametrize("runtime", ["auto", "torch"])
def test_runtimes_side_by_side(
    runtime: str, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CROSSFEED_ENCODER_RUNTIME", runtime)
    settings = Settings()
    corpus = bench_corpus(tmp_path / "bench", limit=24, video_fraction=0.1, progress=False)
    report, emb = run_encoders_bench(
        settings, corpus, texts=8, images=3, videos=1, repeats=2, batch_size=4, progress=False
    )
    res = report.results
    # The configured runtime fills the usual figures (ingest compares against them) ...
    assert res["runtime"] == ("onnx" if runtime == "auto" else "torch")
    assert emb.runtime.name == res["runtime"] and res["cpu_threads"] == 1
    assert res["text_runtime"] == ("onnx-int8" if runtime == "auto" else "torch")
    assert set(res["throughput"]) == {"text", "image", "video"}
    # ... and both runtimes are measured in the same run, whichever is configured.
    assert set(res["runtimes"]) == {"torch", "onnx"}
    for modality in ("text", "image", "video"):
        torch_p50 = res["runtimes"]["torch"][modality]["p50"]
        onnx_p50 = res["runtimes"]["onnx"][modality]["p50"]
        assert torch_p50 > 0 and onnx_p50 > 0
        assert res["speedup"][modality] == pytest.approx(onnx_p50 / torch_p50)
        assert res[f"{modality}_encoder_speedup"] == res["speedup"][modality]
        assert res["runtimes"]["torch"][modality]["n"] == 2
    assert res["agreement"]["image"]["cos_min"] > 0.9999  # fp32 graph: the same features
    assert res["agreement"]["video"]["cos_min"] > 0.9999
    assert res["agreement"]["text"]["cos_mean"] > 0.98  # int8 text graph
    paths = write_report(report, tmp_path / "out")
    md = paths["md"].read_text()
    assert "Tower runtimes side by side" in md and "onnx-int8" in md
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(paths["json"].read_text())["results"]["speedup"] == res["speedup"]


def test_no_comparison_when_asked(settings: Settings, tmp_path: Path) -> None:
    corpus = bench_corpus(tmp_path / "bench", limit=3, video_fraction=0.0, progress=False)
    report, _ = run_encoders_bench(
        settings, corpus, texts=4, images=2, videos=0, repeats=1, compare=False, progress=False
    )
    assert "runtimes" not in report.results and "speedup" not in report.results
