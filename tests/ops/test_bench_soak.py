"""``crossfeed bench soak``: RSS reading and growth arithmetic, load summary, report;
one short soak on the real engines (a real worker and a real API process)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from crossfeed.core.schema import Post
from crossfeed.core.settings import Settings
from crossfeed.ops.bench import soak as soak_mod
from crossfeed.ops.bench.output import render_markdown, write_report
from crossfeed.ops.bench.report import BenchReport
from crossfeed.ops.bench.rss import (
    MB,
    RssSampler,
    descendants,
    parent_pid,
    parse_vmrss,
    process_rss,
    rss_stats,
    tree_rss,
    worst_growth,
)
from crossfeed.ops.bench.soak import Load, Progress, SoakConfig, summarize_load
from crossfeed.ops.bench.soak_cli import add_soak_args, soak_config
from crossfeed.ops.bench.soak_report import build_report, windows
from crossfeed.ops.bench.summary import combine, headline
from crossfeed.ops.exceptions import BenchError

STATUS = "Name:\tpython\nVmPeak:\t  900 kB\nVmRSS:\t  123456 kB\nThreads:\t4\n"


# --------------------------------------------------------------------------- /proc


def test_parse_vmrss() -> None:
    assert parse_vmrss(STATUS) == 123456 * 1024
    assert parse_vmrss("Name:\tkthreadd\nState:\tS\n") is None  # kernel thread / zombie


def test_parent_pid_survives_odd_command_names() -> None:
    assert parent_pid("1234 (a b) c) S 42 1234 1234 0 -1") == 42
    assert parent_pid("garbage") is None


def _fake_proc(root: Path, procs: dict[int, tuple[int, int]]) -> Path:
    """``procs``: pid -> (parent pid, RSS kB)."""
    for pid, (ppid, kb) in procs.items():
        d = root / str(pid)
        d.mkdir(parents=True)
        (d / "stat").write_text(f"{pid} (py thon) S {ppid} {pid} {pid} 0")
        (d / "status").write_text(f"Name:\tx\nVmRSS:\t{kb} kB\n")
    (root / "self").mkdir()  # not a pid: ignored
    return root


def test_tree_rss_sums_the_process_and_all_its_descendants(tmp_path: Path) -> None:
    proc = _fake_proc(
        tmp_path,
        {1: (0, 10), 10: (1, 1000), 11: (10, 200), 12: (11, 30), 20: (1, 5000), 13: (10, 4)},
    )
    assert sorted(descendants(10, proc)) == [11, 12, 13]
    assert tree_rss(10, proc) == ((1000 + 200 + 30 + 4) * 1024, 3)
    assert tree_rss(20, proc) == (5000 * 1024, 0)
    assert tree_rss(99, proc) == (None, 0)  # gone


def test_real_process_tree_is_measured() -> None:
    """This process and a real child that starts a grandchild."""
    code = "import subprocess, time; p = subprocess.Popen(['sleep', '30']); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 20
        while not descendants(child.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        kids = descendants(child.pid)
        assert len(kids) == 1
        assert child.pid in descendants(os.getpid())
        own = process_rss(child.pid)
        total, n = tree_rss(child.pid)
        assert own and total and n == 1 and total > own
        assert (process_rss(os.getpid()) or 0) > 10 * MB
    finally:
        for pid in descendants(child.pid):
            os.kill(pid, 9)
        child.kill()
        child.wait()
    assert process_rss(child.pid) is None


def test_sampler_records_each_process_and_skips_gone_ones() -> None:
    clock = iter([0.0, 5.0, 10.0]).__next__
    reads: dict[int, list[tuple[int | None, int]]] = {
        1: [(100 * MB, 0), (110 * MB, 2)],
        2: [(50 * MB, 0), (None, 0)],
    }
    sampler = RssSampler({"worker": 1, "api": 2}, read=lambda pid: reads[pid].pop(0), clock=clock)
    assert sampler.sample() == {"worker": 100.0, "api": 50.0}
    assert sampler.sample() == {"worker": 110.0}
    assert sampler.samples == {"worker": [(5.0, 100.0), (10.0, 110.0)], "api": [(5.0, 50.0)]}
    assert sampler.children == {"worker": 2, "api": 0}


# --------------------------------------------------------------------------- arithmetic


def _linear(warm: float, end: float, warmup_s: float = 60, span_s: float = 600, step: float = 5):
    samples = [(t, 80.0) for t in range(0, int(warmup_s), int(step))]  # warm-up: not judged
    n = int(span_s / step)
    samples += [(warmup_s + i * step, warm + (end - warm) * i / n) for i in range(n + 1)]
    return samples


def test_growth_of_a_steady_climb() -> None:
    s = rss_stats(_linear(100.0, 110.0), warmup_s=60)
    assert s["warm_mb"] == 100.0 and s["end_mb"] == 110.0 and s["max_mb"] == 110.0
    assert s["growth"] == pytest.approx(0.10)
    assert s["slope_mb_per_min"] == pytest.approx(1.0)  # 10 MB over 10 minutes
    assert s["window_s"] == 60.0
    # medians of the first and last minute: 100.5 and 109.5 MB
    assert s["growth_robust"] == pytest.approx((109.5 - 100.5) / 100.5)
    assert s["max_all_mb"] == 110.0 and s["samples_after"] == 121


def test_robust_growth_ignores_a_spike_at_the_end() -> None:
    samples = _linear(200.0, 200.0)
    samples[-1] = (samples[-1][0], 260.0)  # one sample, e.g. a GC not yet run
    s = rss_stats(samples, warmup_s=60)
    assert s["growth"] == pytest.approx(0.30)
    assert s["growth_robust"] == pytest.approx(0.0)
    assert s["max_mb"] == 260.0


def test_warm_up_is_left_out_and_short_runs_use_a_third_of_the_span() -> None:
    samples = [(0.0, 10.0), (5.0, 500.0), (10.0, 100.0), (20.0, 100.0), (30.0, 100.0)]
    s = rss_stats(samples, warmup_s=10)
    assert s["growth"] == 0.0 and s["max_mb"] == 100.0 and s["max_all_mb"] == 500.0
    assert s["window_s"] == pytest.approx(20 / 3)
    with pytest.raises(ValueError, match=">= 3"):
        rss_stats(samples, warmup_s=25)


def test_worst_growth_is_the_largest_of_the_processes() -> None:
    stats = {"worker": {"growth": 0.02}, "api": {"growth": 0.07}, "x": {"growth": None}}
    assert worst_growth(stats) == 0.07
    assert worst_growth({"a": {"growth": -0.1}}) == -0.1
    assert worst_growth({}) is None


def test_windows_rates_and_latency() -> None:
    rows = windows(
        10.0,
        25.0,
        indexed=[1.0, 2.0, 12.0, 24.0, 40.0],  # 40: made searchable during the drain
        searches=[(0.5, 10.0), (1.0, 30.0), (15.0, 5.0)],
        errors=[16.0],
    )
    assert [(r["t0"], r["t1"]) for r in rows] == [(0, 10), (10, 20), (20, 25)]
    assert [r["indexed_per_s"] for r in rows] == [0.2, 0.1, 1 / 5]  # 40: after the load
    sliver = windows(10.0, 20.5, indexed=[20.2], searches=[(20.1, 7.0)], errors=[])
    assert [(r["t0"], r["t1"]) for r in sliver] == [(0, 10), (10, 20.5)]
    assert sliver[1]["searches"] == 1 and sliver[1]["indexed_per_s"] == pytest.approx(1 / 10.5)
    assert rows[0]["search_p50_ms"] == 20.0 and rows[0]["searches"] == 2
    assert rows[1]["errors"] == 1 and rows[1]["search_p95_ms"] == 5.0
    assert rows[2]["search_p50_ms"] is None
    with pytest.raises(ValueError):
        windows(0, 10, indexed=[], searches=[], errors=[])


def test_summarize_load_counts_lost_posts_and_failed_searches() -> None:
    load = Load()
    load.sent = {"a": 100.0, "b": 101.0, "c": 102.0}
    load.visible = {"a": 101.5, "b": 104.0}
    load.images = 1
    load.searches = [(100.0, 40.0, True, False), (101.0, 4.0, True, True), (102, 9.0, False, False)]
    out = summarize_load(load, 100.0, 10.0, SoakConfig(duration_s=10, sample_s=1))
    assert out["posts"] == {
        "produced": 3,
        "images": 1,
        "searchable": 2,
        "lost": 1,
        "produced_per_s": 0.3,
    }
    assert out["freshness_s"]["p50"] == pytest.approx(2.25)  # 1.5 and 3.0 s
    s = out["searches"]
    assert (s["requests"], s["errors"], s["cached"]) == (3, 1, 1)
    assert s["latency_ms"]["n"] == 2 and s["latency_ms"]["max"] == 40.0
    assert sum(w["searches"] for w in out["timeline"]) == 2


def test_progress_reports_stalls(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    now = [1000.0]
    monkeypatch.setattr(soak_mod.time, "monotonic", lambda: now[0])
    show = Progress(True, 600, 60)
    now[0] += 100  # models loading: not a stall, the load has not started
    waiting = Load()
    waiting.sent = {"x": 0.0}
    show.tick(0, waiting, {})
    assert show.stalls == []
    load = Load()
    load.sent = {"a": 0.0, "b": 0.0}
    load.visible = {"a": 1.0}
    load.searches = [(0.0, 5.0, True, False)]
    show.tick(0, load, {"worker": 300.0})
    now[0] += 31
    load.searches.append((1.0, 5.0, False, False))
    load.errors = ["HTTP 503 engine down"]
    show.tick(31, load, {"worker": 300.0})
    assert len(show.stalls) == 2
    assert "1 waiting" in show.stalls[0] and "HTTP 503" in show.stalls[1]
    err = capsys.readouterr().err
    assert "0/600 s (warm-up)" in err and "RSS worker 300 MB" in err


def test_soak_posts_are_paced_unique_and_never_reposts_of_the_burst() -> None:
    """The max-rate burst draws its texts from the same seed: a soak post with an equal
    text would be dropped as a repost and counted lost (it was, 19 posts, once)."""
    import threading

    import numpy as np

    from crossfeed.core.text import content_hash
    from crossfeed.ops.bench.push import _filler_text

    cfg = SoakConfig(seed=0, image_every=5)
    picture = Post.model_validate(
        {
            "id": "pic",
            "source": "corpus",
            "author": "@a",
            "created_at": "2026-01-01T00:00:00Z",
            "text": "a red car",
            "media": [{"kind": "image", "path": "/x/car.png", "mime": "image/png"}],
        }
    )
    load, stop = Load(), threading.Event()
    gen = soak_mod._posts(cfg, 1000.0, [picture], load, stop)
    posts = [next(gen) for _ in range(60)]
    stop.set()
    assert list(gen) == []
    rng = np.random.default_rng(cfg.seed)
    burst = {content_hash(_filler_text(rng, i), [], []) for i in range(300)}
    hashes = {content_hash(p.text, p.tags, p.media) for p in posts}
    assert len(hashes) == 60 and not hashes & burst
    assert [p.id for p in posts] == list(load.sent) and load.images == 12
    assert all(p.media and p.text.startswith("a red car soak") for p in posts[4::5])


def test_config_checks_and_options() -> None:
    assert SoakConfig(duration_s=600).warmup == 120
    assert SoakConfig(duration_s=40).warmup == 10
    for bad in (
        SoakConfig(duration_s=10, warmup_s=10),
        SoakConfig(duration_s=20, warmup_s=10, sample_s=5),  # 2 samples after the warm-up
        SoakConfig(rate=0),
        SoakConfig(burst=5),
    ):
        with pytest.raises(BenchError):
            bad.check()
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=0)
    add_soak_args(p, prefix="soak-")
    cfg = soak_config(p.parse_args(["--soak-duration", "30", "--soak-rate", "4.5"]), prefix="soak-")
    assert (cfg.duration_s, cfg.rate, cfg.warmup, cfg.image_every) == (30.0, 4.5, 7.5, 20)
    auto = soak_config(p.parse_args(["--soak-warmup", "auto"]), prefix="soak-")
    assert auto.rate is None and auto.warmup == 120
    with pytest.raises(BenchError, match=r"here: the --soak-\* options"):
        soak_config(p.parse_args(["--soak-duration", "5", "--soak-warmup", "5"]), prefix="soak-")
    with pytest.raises(BenchError, match="number or auto"):
        soak_config(p.parse_args(["--soak-rate", "fast"]), prefix="soak-")


def test_cli_refuses_bad_soak_options_before_starting_anything() -> None:
    from crossfeed.ops.cli import main

    assert main(["bench", "soak", "--duration", "10", "--warmup", "10", "--no-progress"]) == 1
    assert main(["bench", "all", "--soak-rate", "0", "--no-progress"]) == 1


# --------------------------------------------------------------------------- report


def _results(worker_growth: float) -> dict[str, Any]:
    def proc(warm: float, growth: float) -> dict[str, Any]:
        samples = [(t, 80.0) for t in (0.0, 5.0)] + _linear(warm, warm * (1 + growth), 10, 60)
        return {
            "pid": 1,
            "descendants_max": 0,
            "samples": [[t, v] for t, v in samples],
            **rss_stats(samples, 10),
        }

    rss = {"worker": proc(400.0, worker_growth), "api": proc(300.0, 0.01)}
    return {
        "rate_posts_per_s": 8.0,
        "max_ingest": {"posts_per_s": 16.0},
        "warmup_s": 10.0,
        "posts": {"produced": 560, "images": 28, "searchable": 560, "lost": 0},
        "freshness_s": {"n": 560, "p50": 1.2, "p95": 2.5},
        "searches": {
            "requests": 140,
            "errors": 0,
            "cached": 66,
            "latency_ms": {"n": 140, "p50": 30.0, "p95": 90.0},
        },
        "timeline": windows(20, 70, indexed=[1.0, 30.0], searches=[(2.0, 30.0)], errors=[]),
        "stalls": ["at 40 s: no search answered for 30 s: HTTP 503"],
        "load_avg_1m": {"mean": 3.21, "max": 5.5},
        "rss": rss,
        "rss_growth": worst_growth(rss),
        "rss_growth_robust": worst_growth(rss, "growth_robust"),
    }


def _report(worker_growth: float) -> BenchReport:
    cfg = SoakConfig(duration_s=70, warmup_s=10, sample_s=5)
    return build_report(_results(worker_growth), cfg=cfg, model_version="v1")


def test_report_says_whether_the_target_is_met(tmp_path: Path) -> None:
    ok = _report(0.04)
    assert ok.results["rss_growth"] == pytest.approx(0.04)
    md = render_markdown(ok)
    assert "| worker | 400 | 416 | 416 | +4.0% |" in md
    assert "target <= 10%: met" in md and "stall at 40 s" in md
    assert "560 / 0" in md and "half the measured maximum 16.0" in md
    assert "| load average (1 min) mean / max | 3.21 / 5.5 |" in md
    assert "were not searchable" not in md
    lost = _results(0.25)
    lost["posts"]["lost"], lost["drain_s"] = 19, 180.0
    bad = render_markdown(build_report(lost, cfg=SoakConfig(duration_s=70), model_version="v"))
    assert "+25.0%" in bad and "NOT met" in bad
    assert "19 posts were not searchable 180.0 s after the load stopped" in bad
    paths = write_report(ok, tmp_path)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(paths["json"].read_text())
    assert data["bench"] == "soak" and data["results"]["rss"]["api"]["samples"][0] == [0.0, 80.0]


def test_bench_all_headline_and_figure_include_the_soak(tmp_path: Path) -> None:
    combined = combine({"soak": _report(0.04)})
    rows = {r[0]: r for r in headline({"soak": _report(0.04)}).rows}
    assert rows["soak RSS growth (worst process)"][1] == pytest.approx(0.04)
    assert "0 posts lost" in rows["soak RSS growth (worst process)"][3]
    assert write_report(combined, tmp_path)["png"].stat().st_size > 0


def test_bench_all_runs_the_soak_part_with_its_own_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: Any
) -> None:
    """The wiring of ``bench all``: the soak-prefixed options reach the soak part, whose
    report lands in all.json (the runner itself is the integration test's)."""
    from crossfeed.ops.bench import cli, soak_cli
    from crossfeed.ops.cli import main

    calls: list[dict[str, Any]] = []

    def fake_part(args: argparse.Namespace, base: Any, out: Path, **kw: Any) -> BenchReport:
        calls.append({"cfg": soak_config(args, prefix=kw["prefix"]), **kw})
        return _report(0.03)

    monkeypatch.setattr(soak_cli, "run_soak_part", fake_part)
    monkeypatch.setattr(cli, "_check_engines", lambda settings: None)
    others = "engines,encoders,ingest,query,live,workers,scale"
    argv = ["bench", "all", "--skip", others, "--out", str(tmp_path)]
    argv += ["--soak-duration", "45", "--soak-rate", "3", "--no-progress", "--no-png"]
    assert main(argv) == 0
    assert len(calls) == 1 and calls[0]["prefix"] == "soak-"
    assert (calls[0]["cfg"].duration_s, calls[0]["cfg"].rate) == (45.0, 3.0)
    data = json.loads((tmp_path / "all.json").read_text())
    assert set(data["results"]) == {"soak", "figures"}
    assert data["results"]["soak"]["rss_growth"] == pytest.approx(0.03)
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["soak_rss_growth"] == pytest.approx(0.03) and figures["parts"] == ["soak"]
    argv[3] = others + ",soak"
    assert main(argv) == 1  # nothing left to run
    assert len(calls) == 2


# --------------------------------------------------------------------------- integration


@pytest.mark.integration
@pytest.mark.slow
def test_bench_soak_end_to_end(engines: object, tmp_path: Path) -> None:
    """30 s of load on a real worker and a real API process: a report with sane figures,
    no post lost, no failed search, and nothing left behind."""
    from crossfeed.ops.bench.live import RowProbe
    from crossfeed.ops.cli import main

    out = tmp_path / "bench"
    argv = ["bench", "soak", "--out", str(out), "--duration", "30", "--warmup", "10"]
    argv += ["--rate", "4", "--search-rate", "2", "--image-every", "5", "--limit", "5"]
    argv += ["--sample", "2", "--no-progress"]
    assert main(argv) == 0
    data = json.loads((out / "soak.json").read_text())
    r = data["results"]
    assert set(r["rss"]) == {"worker", "api"}
    for name, s in r["rss"].items():
        assert s["samples_after"] >= 8, name
        # both load the encoders (torch or onnxruntime): hundreds of MB, not a few
        assert 100 < s["warm_mb"] < 8000 and 100 < s["end_mb"] < 8000, name
        assert s["max_mb"] >= max(s["warm_mb"], s["end_mb"]), name
        assert s["growth"] == pytest.approx((s["end_mb"] - s["warm_mb"]) / s["warm_mb"])
        assert -0.5 < s["growth"] < 1.0, name
        assert not _alive(s["pid"]), f"the {name} process outlived the bench"
    assert r["rss_growth"] == max(s["growth"] for s in r["rss"].values())
    posts = r["posts"]
    assert 100 <= posts["produced"] <= 130  # 4/s for 30 s
    assert posts["images"] >= 20 and posts["lost"] == 0
    assert posts["searchable"] == posts["produced"]
    searches = r["searches"]
    assert searches["requests"] >= 40 and searches["errors"] == 0
    assert searches["cached"] > 0 and searches["latency_ms"]["p50"] > 0
    assert sum(w["searches"] for w in r["timeline"]) == searches["requests"]
    assert r["load_avg_1m"]["max"] >= r["load_avg_1m"]["mean"] > 0
    assert (out / "soak.png").stat().st_size > 0
    assert "RSS (MB) of each process" in (out / "soak.md").read_text()
    settings = Settings()
    settings.milvus = settings.milvus.model_copy(update={"collection": r["collection"]})
    probe = RowProbe(settings)
    try:
        assert not probe.exists(), "the bench left its collection behind"
    finally:
        probe.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return (
        Path(f"/proc/{pid}/status").is_file()
        and "zombie" not in Path(f"/proc/{pid}/status").read_text()
    )
