"""``crossfeed bench all``: the headline figures read from each part's results, their
targets, the figures table, ``--json``; and the helpers of ``bench workers``.

Fake part results here (the shapes the real benches write); the real benches run in
``tests/ops/test_bench.py`` and ``tests/ops/test_bench_workers.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from crossfeed.ops.bench.plot import draw_report, plot_workers
from crossfeed.ops.bench.report import BenchReport, summarize
from crossfeed.ops.bench.suite import emit_json
from crossfeed.ops.bench.summary import combine, target_table
from crossfeed.ops.bench.targets import FIGURES, figures
from crossfeed.ops.bench.workers import build_report as workers_report
from crossfeed.ops.bench.workers import delivery, stage_counts, text_posts

REQUIRED = {
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
    "soak_rss_growth",
    "two_worker_lost",
}


def _encoders() -> dict[str, Any]:
    def thr(values: list[float]) -> dict[str, Any]:
        return {"summary": summarize(values)}

    return {
        "throughput": {"text": thr([90, 100, 110]), "image": thr([20.0]), "video": thr([4.0])},
        "speedup": {"text": 2.4, "image": 1.5, "video": 2.7},
    }


def _ingest() -> dict[str, Any]:
    return {
        "phases": {
            "text": {"posts": 180, "seconds": 2.0, "rows_per_s": 90.0},
            "image": {"posts": 50, "seconds": 5.0, "rows_per_s": 10.0},
            # 9 videos in 2.5 s: 3.6 videos/s, but 3 rows each (moments): the ratio is
            # of videos, like the encoder's rate, not of rows.
            "video": {"posts": 9, "seconds": 2.5, "rows_per_s": 10.8},
        },
        "freshness_idle_s": {"summary": summarize([0.4, 0.5, 1.2])},
    }


def _parts(**extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        "encoders": _encoders(),
        "ingest": _ingest(),
        "live": {"latency": {"1": {"searchable_s": {"p95": 1.8}}, "10000": {}}},
        "scale": {
            "rows": 200_000,
            "latency": {"uncached": {"p50": 40.0}, "cached": {"p50": 1.5}},
            "recall": {"none": {"mean": 0.97}},
        },
        "workers": {"two_worker_lost": 0, "speedup": 0.9},
        **extra,
    }


def test_every_required_key_has_a_figure_with_a_target() -> None:
    keys = {f.key for f in FIGURES}
    assert keys >= REQUIRED
    assert all(f.target is not None for f in FIGURES if f.key in REQUIRED)


def test_figures_are_read_from_each_part_and_compared_with_their_targets() -> None:
    out = figures(_parts(soak={"rss_growth": 0.04}))
    assert out["text_ingest_ratio"] == pytest.approx(0.9)  # 90 rows/s / 100 texts/s
    assert out["image_ingest_ratio"] == pytest.approx(0.5)
    assert out["video_ingest_ratio"] == pytest.approx(0.9)
    assert out["text_encoder_speedup"] == 2.4 and out["image_encoder_speedup"] == 1.5
    assert out["freshness_p95_idle_s"] == pytest.approx(summarize([0.4, 0.5, 1.2])["p95"])
    assert out["freshness_p95_half_load_s"] == 1.8
    assert (out["query_uncached_p50_ms"], out["query_cached_p50_ms"]) == (40.0, 1.5)
    assert out["recall_at_10"] == 0.97 and out["scale_rows"] == 200_000
    assert out["soak_rss_growth"] == 0.04
    assert out["two_worker_lost"] == 0 and isinstance(out["two_worker_lost"], int)
    assert out["two_worker_speedup"] == 0.9
    met = out["met"]
    assert met["text_ingest_ratio"] is True and met["image_ingest_ratio"] is False
    assert met["text_encoder_speedup"] is True and met["image_encoder_speedup"] is False
    assert met["freshness_p95_idle_s"] is False  # p95 of [0.4, 0.5, 1.2] is above 1 s
    assert met["freshness_p95_half_load_s"] is True
    assert met["query_uncached_p50_ms"] is False and met["query_cached_p50_ms"] is True
    assert met["recall_at_10"] is True and met["soak_rss_growth"] is True
    assert met["two_worker_lost"] is True
    assert "two_worker_speedup" not in met  # reported, no target
    assert out["targets"]["two_worker_lost"] == {"op": "==", "value": 0.0, "unit": "posts"}
    assert out["targets"]["soak_rss_growth"]["value"] == 0.10


def test_soak_is_optional() -> None:
    out = figures(_parts())
    assert out["soak_rss_growth"] is None and out["met"]["soak_rss_growth"] is None
    assert figures(_parts(soak={"rss_growth": 0.2}))["met"]["soak_rss_growth"] is False


def test_skipped_parts_give_null_figures_and_unknown_met() -> None:
    out = figures({"engines": {"engines": {}}})
    assert all(out[key] is None for key in REQUIRED)
    assert all(value is None for value in out["met"].values())
    assert set(out["targets"]) >= REQUIRED


def test_ingest_ratio_needs_the_ingest_and_the_encoder_rate() -> None:
    assert figures({"ingest": _ingest()})["text_ingest_ratio"] is None
    assert figures({"encoders": _encoders()})["text_ingest_ratio"] is None
    no_video = _parts()
    del no_video["ingest"]["phases"]["video"]
    assert figures(no_video)["video_ingest_ratio"] is None


def test_a_lost_post_or_a_missed_kill() -> None:
    assert figures({"workers": {"two_worker_lost": 3}})["met"]["two_worker_lost"] is False
    assert figures({"workers": {"two_worker_lost": None}})["met"]["two_worker_lost"] is None


def test_target_table_and_combined_report(tmp_path: Path) -> None:
    parts = _parts()
    table = target_table(parts)
    assert table.columns == ["figure", "value", "target", "met?", "from"]
    rows = {row[0]: row for row in table.rows}
    assert rows["recall@10 vs exact search"][2:4] == [">= 0.95", True]
    assert "200,000 rows" in rows["recall@10 vs exact search"][4]
    assert rows["soak RSS growth"][1:4] == [None, "<= 0.1 fraction", "-"]
    md = table.markdown()
    assert "| posts lost, 1 of 2 workers killed | 0 | == 0 posts | yes | workers |" in md
    # headline() reads more of encoders and ingest than these fakes have; the rest suffice
    fakes = {k: v for k, v in parts.items() if k not in ("encoders", "ingest")}
    combined = combine({name: BenchReport(name, name, results=r) for name, r in fakes.items()})
    assert combined.tables[0].title == "Figures and targets"
    assert combined.results["figures"]["recall_at_10"] == 0.97
    assert combined.results["workers"] == parts["workers"]
    fakes["workers"] = _workers_results(True)
    reports = {name: BenchReport(name, name, results=r) for name, r in fakes.items()}
    assert draw_report(combine(reports), tmp_path / "all.png")  # the workers panel draws


def test_emit_json_prints_one_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parts = _parts(soak={"rss_growth": 0.03})
    for skipped in ("scale", "encoders", "ingest"):
        del parts[skipped]
    combined = combine({name: BenchReport(name, name, results=r) for name, r in parts.items()})
    args = SimpleNamespace(no_png=True)
    assert emit_json(combined, args, tmp_path) == 0  # type: ignore[arg-type]
    data = json.loads(capsys.readouterr().out)
    assert set(data) >= REQUIRED and {"targets", "met", "report"} <= set(data)
    assert data["recall_at_10"] is None and data["met"]["recall_at_10"] is None
    assert data["soak_rss_growth"] == 0.03 and data["two_worker_lost"] == 0
    assert "scale" not in data["parts"] and "soak" in data["parts"]
    saved = json.loads(Path(data["report"]).read_text())
    assert saved["results"]["figures"]["soak_rss_growth"] == 0.03


def test_bad_part_options_fail_before_anything_runs() -> None:
    from crossfeed.ops.cli import main

    skip = "engines,encoders,ingest,query,live,workers,soak"
    assert main(["bench", "all", "--skip", skip, "--scale-concurrency", "x"]) == 1
    assert main(["bench", "all", "--skip", skip, "--scale-rows", "10"]) == 1
    assert main(["bench", "all", "--skip", skip + ",scale"]) == 1  # nothing to run


# --------------------------------------------------------------------------- bench workers


def test_delivery_counts_lost_duplicated_and_unexpected() -> None:
    out = delivery(["a", "b", "c"], ["a", "a", "c", "x"])
    assert out == {"lost": ["b"], "duplicated": ["a"], "unexpected": ["x"]}
    assert delivery(["a"], ["a"]) == {"lost": [], "duplicated": [], "unexpected": []}


def test_a_bench_worker_gets_the_session_timeout_of_its_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Workers hand a killed partner's partitions over after this timeout; the bench's
    workers must use the configured one (it was left out of their environment)."""
    from crossfeed.core.settings import Settings
    from crossfeed.ops.bench.live import BenchNames, bench_settings, worker_env

    monkeypatch.setenv("CROSSFEED_KAFKA_SESSION_TIMEOUT", "7.5")
    settings = bench_settings(Settings(), BenchNames.new())
    monkeypatch.delenv("CROSSFEED_KAFKA_SESSION_TIMEOUT")
    for key, value in worker_env(settings).items():
        monkeypatch.setenv(key, value)
    assert Settings().kafka.session_timeout_s == 7.5


def test_text_posts_are_distinct_and_never_reposts() -> None:
    from crossfeed.ops.bench.corpus import stream_view

    posts = text_posts("x", 200) + text_posts("x", 200)
    assert len({p.id for p in posts}) == 400
    views = [stream_view(p) for p in posts]
    assert len({digest for digest, _ in views}) == 400
    assert all(rows == 1 for _, rows in views)


def test_stage_counts_reads_a_real_worker_metrics_endpoint() -> None:
    from crossfeed.ops.bench.report import free_port
    from crossfeed.streams.metrics import WorkerMetrics
    from crossfeed.streams.worker import serve_metrics

    metrics = WorkerMetrics()
    metrics.posts_in.labels(stage="normalize").inc(5)
    metrics.posts_in.labels(stage="index").inc(2)
    port = free_port()
    server = serve_metrics(metrics, port, "127.0.0.1")
    try:
        assert stage_counts(port) == {"normalize": 5.0, "embed": 0.0, "index": 2.0}
    finally:
        server.shutdown()
        server.server_close()


def _workers_results(killed: bool) -> dict[str, Any]:
    def phase(rate: float) -> dict[str, Any]:
        return {"posts": 100, "rows": 100, "expected_rows": 100, "seconds": 100 / rate}

    return {
        "cpus": 2,
        "cpu_threads_per_worker": 1,
        "partitions": 4,
        "session_timeout_s": 10.0,
        "shared": {"seconds": 12.0, "rounds": 3},
        "one_worker": {**phase(50.0), "rows_per_s": 50.0},
        "two_workers": {
            **phase(45.0),
            "rows_per_s": 45.0,
            "posts_read": [dict.fromkeys(("normalize", "embed", "index"), 50.0)] * 2,
        },
        "speedup": 0.9,
        "kill": {
            "posts": 400,
            "killed": killed,
            "rows_at_kill": 120 if killed else None,
            "seconds_kill_to_done": 20.0 if killed else None,
            "lost": 0,
            "duplicated": 0,
            "unexpected": 0,
            "settle_s": 120.0,
        },
        "two_worker_lost": 0 if killed else None,
    }


def test_workers_report_tables_figure_and_the_missed_kill(tmp_path: Path) -> None:
    from crossfeed.ops.bench.output import write_report

    report = workers_report(_workers_results(True), posts=100)
    assert write_report(report, tmp_path)["png"].stat().st_size > 0
    assert [t.title.split(" ")[0] for t in report.tables] == ["Text", "Posts", "One"]
    assert report.tables[0].rows[1][-1] == 0.9
    assert report.tables[2].rows[0][:3] == [400, 120, 0]
    assert not any("no figure" in n for n in report.notes)
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    try:
        assert plot_workers(ax, _workers_results(True))
        assert "0 lost, 0 duplicated" in ax.get_title()
        assert not plot_workers(ax, {"one_worker": {"rows_per_s": 5.0}})
    finally:
        plt.close(fig)
    missed = workers_report(_workers_results(False), posts=100)
    assert any("finished before the kill" in n for n in missed.notes)
    assert figures({"workers": missed.results})["two_worker_lost"] is None
