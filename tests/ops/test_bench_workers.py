"""``crossfeed bench workers`` and ``bench all --json`` on the real engines.

Two real worker processes share one consumer group's partitions, and when one is killed
(SIGKILL) mid-stream the other indexes the rest: nothing lost, nothing stored twice,
nothing left behind. ``bench all --json`` reads its figures from the real parts' results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crossfeed.core.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_bench_workers_end_to_end(
    engines: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crossfeed.ops.bench.live import RowProbe
    from crossfeed.ops.cli import main

    monkeypatch.setenv("CROSSFEED_CPU_THREADS", "1")
    out = tmp_path / "bench"
    argv = ["bench", "workers", "--out", str(out), "--posts", "40", "--kill-posts", "300"]
    assert main([*argv, "--no-progress"]) == 0
    data = json.loads((out / "workers.json").read_text())
    assert data["bench"] == "workers"
    r = data["results"]
    for key in ("one_worker", "two_workers"):
        assert r[key]["rows"] == r[key]["expected_rows"] == 40, key
        assert r[key]["rows_per_s"] > 0, key
    assert r["speedup"] == pytest.approx(
        r["two_workers"]["rows_per_s"] / r["one_worker"]["rows_per_s"]
    )
    # each worker read posts in every stage before the 2-worker run began
    assert all(c[s] > 0 for c in r["shared"]["counts"] for s in ("normalize", "embed", "index"))
    read = r["two_workers"]["posts_read"]
    assert sum(w["normalize"] for w in read) >= 40  # the run's posts (replays would add)
    assert all(w["normalize"] > 0 for w in read)  # 40 keys over 4 partitions: both get some
    kill = r["kill"]
    assert kill["killed"], "the stream finished before the kill"
    assert 0 < kill["rows_at_kill"] < 300
    assert (kill["lost"], kill["duplicated"], kill["unexpected"]) == (0, 0, 0), kill
    assert kill["rows"] == 300 and r["two_worker_lost"] == 0
    assert (out / "workers.png").stat().st_size > 0
    assert "### One of two workers killed (SIGKILL) mid-stream" in (out / "workers.md").read_text()
    settings = Settings()
    settings.milvus = settings.milvus.model_copy(update={"collection": r["collection"]})
    probe = RowProbe(settings)
    try:
        assert not probe.exists(), "the bench left its collection behind"
    finally:
        probe.close()


def test_bench_all_json_reads_every_figure_from_the_real_parts(
    engines: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """``bench all --json`` with tiny encoders, ingest, live and scale parts: the figures'
    paths into the real results hold numbers; the skipped parts' figures are null."""
    from crossfeed.ops.cli import main

    monkeypatch.setenv("CROSSFEED_CPU_THREADS", "1")
    out = tmp_path / "bench"
    argv = ["bench", "all", "--json", "--no-progress", "--out", str(out)]
    argv += ["--skip", "engines,query,workers,soak", "--limit", "20", "--texts", "32"]
    argv += ["--images", "4", "--videos", "1", "--encoder-repeats", "1"]
    argv += ["--freshness-samples", "3", "--queries", "5", "--query-images", "3"]
    argv += ["--live-burst", "20", "--live-subscriptions", "10", "--live-duration", "3"]
    argv += ["--live-cost-rounds", "1", "--scale-rows", "1000", "--scale-requests", "8"]
    argv += ["--scale-concurrency", "1,2"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)  # stdout holds the one JSON object only
    measured = [
        "text_ingest_ratio",
        "image_ingest_ratio",
        "video_ingest_ratio",
        "text_encoder_speedup",
        "image_encoder_speedup",
        "freshness_p95_idle_s",
        "freshness_p95_half_load_s",
        "query_uncached_p50_ms",
        "query_cached_p50_ms",
        "recall_at_10",
    ]
    for key in measured:
        assert isinstance(data[key], float) and data[key] > 0, key
        assert isinstance(data["met"][key], bool), key
    assert data["two_worker_lost"] is None and data["met"]["two_worker_lost"] is None
    assert data["soak_rss_growth"] is None and data["scale_rows"] == 1000
    assert data["parts"] == ["encoders", "ingest", "live", "scale"]
    saved = json.loads(Path(data["report"]).read_text())
    assert saved["results"]["figures"]["recall_at_10"] == data["recall_at_10"]
    assert (out / "all.md").read_text().count("### Figures and targets") == 1
    assert (out / "all.png").stat().st_size > 0
