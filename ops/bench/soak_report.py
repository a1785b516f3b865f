"""The report of ``crossfeed bench soak``: tables, notes and its figure.

Everything here reads only the JSON-ready ``results`` (so a figure can be redrawn from
a saved report) and imports neither the plotting module nor the runner.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crossfeed.ops.bench.report import BenchReport, Table

GROWTH_TARGET = 0.10  # RSS may grow at most 10% after the warm-up


def windows(
    width_s: float,
    elapsed_s: float,
    *,
    indexed: list[float],
    searches: list[tuple[float, float]],
    errors: list[float],
) -> list[dict[str, Any]]:
    """Per window of ``width_s`` over ``[0, elapsed_s)``: posts that became searchable per
    second, successful searches with their p50/p95 latency (ms), failed searches.

    ``indexed`` and ``errors`` are times (s since the start), ``searches`` (time, ms).
    Only the load is covered: posts made searchable in the drain after it are left out
    (they are in the totals), and a trailing sliver shorter than a tenth of a window
    joins the window before it.
    """
    if width_s <= 0:
        raise ValueError("the window width must be positive")
    n = max(1, int(np.ceil(elapsed_s / width_s - 0.1)))

    def slot(t: float) -> int:
        return min(n - 1, max(0, int(t // width_s))) if t <= elapsed_s else -1

    rows: list[dict[str, Any]] = []
    for i in range(n):
        t0, t1 = i * width_s, min(elapsed_s, (i + 1) * width_s) if i < n - 1 else elapsed_s
        ms = [m for t, m in searches if slot(t) == i]
        span = max(t1 - t0, 1e-9)
        rows.append(
            {
                "t0": round(t0, 2),
                "t1": round(t1, 2),
                "indexed_per_s": sum(1 for t in indexed if slot(t) == i) / span,
                "searches": len(ms),
                "errors": sum(1 for t in errors if slot(t) == i),
                "search_p50_ms": float(np.percentile(ms, 50)) if ms else None,
                "search_p95_ms": float(np.percentile(ms, 95)) if ms else None,
            }
        )
    return rows


def build_report(results: dict[str, Any], *, cfg: Any, model_version: str) -> BenchReport:
    parameters = {
        "duration_s": cfg.duration_s,
        "warmup_s": cfg.warmup,
        "rate": "auto (half the max)" if cfg.rate is None else cfg.rate,
        "burst": cfg.burst if cfg.rate is None else None,
        "search_rate": cfg.search_rate,
        "image_every": cfg.image_every,
        "sample_s": cfg.sample_s,
        "seed": cfg.seed,
        "model_version": model_version,
    }
    report = BenchReport(
        name="soak",
        title="crossfeed bench: soak (memory under steady load)",
        parameters=parameters,
        results=results,
    )
    mem = Table(
        f"RSS (MB) of each process after a {cfg.warmup:.0f} s warm-up",
        [
            "process",
            "warm-up end",
            "end",
            "max",
            "growth",
            "robust growth",
            "slope MB/min",
            "descendants",
        ],
    )
    for name, s in results["rss"].items():
        mem.add(
            name,
            s["warm_mb"],
            s["end_mb"],
            s["max_mb"],
            _pct(s["growth"]),
            _pct(s["growth_robust"]),
            s["slope_mb_per_min"],
            s["descendants_max"],
        )
    report.tables.append(mem)
    posts, searches = results["posts"], results["searches"]
    lat, fresh = searches["latency_ms"], results["freshness_s"]
    load = Table(
        f"Load: {results['rate_posts_per_s']:.1f} posts/s"
        + (
            f" (half the measured maximum {results['max_ingest']['posts_per_s']:.1f})"
            if results.get("max_ingest")
            else ""
        ),
        ["measure", "value"],
    )
    load.add("posts produced (pictures)", f"{posts['produced']:,} ({posts['images']:,})")
    load.add("posts searchable / lost", f"{posts['searchable']:,} / {posts['lost']:,}")
    load.add(
        "produce -> searchable p50 / p95 s", f"{_f(fresh.get('p50'))} / {_f(fresh.get('p95'))}"
    )
    load.add(
        "searches (cached) / failed",
        f"{searches['requests']:,} ({searches['cached']:,}) / {searches['errors']:,}",
    )
    load.add("search latency p50 / p95 ms", f"{_f(lat.get('p50'))} / {_f(lat.get('p95'))}")
    cpu = results.get("load_avg_1m") or {}
    load.add("load average (1 min) mean / max", f"{_f(cpu.get('mean'))} / {_f(cpu.get('max'))}")
    report.tables.append(load)
    report.tables.append(_timeline_table(results["timeline"]))
    growth = results.get("rss_growth")
    verdict = "met" if growth is not None and growth <= GROWTH_TARGET else "NOT met"
    report.notes.append(
        f"rss_growth (largest of the processes, (end - warm-up end) / warm-up end): "
        f"{_pct(growth)}; target <= {GROWTH_TARGET:.0%}: {verdict}. Robust growth compares "
        f"the medians of the first and last {results['rss']['worker']['window_s']:.0f} s "
        "after the warm-up."
    )
    report.notes.append(
        "worker = one `crossfeed worker` process, api = one `crossfeed serve --no-workers` "
        "process, each with its descendants; RSS from /proc/<pid>/status (VmRSS). Searches "
        "go in threes: one of 20 pooled texts, the same again at once, a new text. The "
        "cache is keyed by the index epoch, which each indexed batch moves, so under "
        "steady ingest mostly the immediate repeats are cache hits."
    )
    if posts["lost"]:
        report.notes.append(
            f"{posts['lost']} posts were not searchable {results.get('drain_s', '?')} s "
            "after the load stopped (lost, or the worker far behind): see soak-worker.log."
        )
    for stall in results.get("stalls") or []:
        report.notes.append(f"stall {stall}")
    return report


def _timeline_table(timeline: list[dict[str, Any]]) -> Table:
    t = Table(
        "Over time",
        ["window s", "searchable posts/s", "searches", "failed", "p50 ms", "p95 ms"],
    )
    for w in timeline:
        t.add(
            f"{w['t0']:.0f}-{w['t1']:.0f}",
            w["indexed_per_s"],
            w["searches"],
            w["errors"],
            w["search_p50_ms"],
            w["search_p95_ms"],
        )
    return t


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1%}"


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def plot_soak(ax: Any, results: dict[str, Any]) -> bool:
    """RSS over time per process (warm-up shaded) above; below, posts made searchable
    per second and search latency p50/p95 per window. Splits ``ax``'s cell in two."""
    rss = results.get("rss") or {}
    series = {n: s["samples"] for n, s in rss.items() if s.get("samples")}
    if not series:
        return False
    timeline = results.get("timeline") or []
    top = ax
    if timeline:
        fig = ax.figure
        cell = ax.get_subplotspec().subgridspec(2, 1, height_ratios=[3, 2], hspace=0.08)
        ax.remove()
        top = fig.add_subplot(cell[0])
        low = fig.add_subplot(cell[1], sharex=top)
        top.tick_params(labelbottom=False)
    warmup = float(results.get("warmup_s") or 0.0)
    for name, samples in series.items():
        t = [p[0] / 60 for p in samples]
        top.plot(t, [p[1] for p in samples], label=f"{name} ({_pct(rss[name].get('growth'))})")
    top.axvspan(0, warmup / 60, color="grey", alpha=0.15, label="warm-up")
    top.set_ylabel("RSS, MB")
    top.set_ylim(bottom=0)
    growth = results.get("rss_growth")
    top.set_title(f"soak: RSS per process (growth after warm-up {_pct(growth)})", fontsize=10)
    top.legend(fontsize=8, loc="lower right")
    if not timeline:
        top.set_xlabel("minutes since the load started")
        return True
    mids = [(w["t0"] + w["t1"]) / 120 for w in timeline]
    for key, style in (("search_p50_ms", "-o"), ("search_p95_ms", "--o")):
        pts = [(m, w[key]) for m, w in zip(mids, timeline, strict=True) if w[key] is not None]
        if pts:
            low.plot(*zip(*pts, strict=True), style, markersize=3, label=f"search {key[7:10]}")
    low.set_ylabel("search ms")
    low.set_ylim(bottom=0)
    low.set_xlabel("minutes since the load started")
    right = low.twinx()
    right.step(
        [w["t0"] / 60 for w in timeline] + [timeline[-1]["t1"] / 60],
        [w["indexed_per_s"] for w in timeline] + [timeline[-1]["indexed_per_s"]],
        where="post",
        color="#55a868",
        label="searchable posts/s",
    )
    if results.get("rate_posts_per_s"):
        right.axhline(
            results["rate_posts_per_s"], color="#55a868", ls=":", label="produced posts/s"
        )
    right.set_ylabel("posts/s", color="#55a868")
    right.set_ylim(bottom=0)
    handles = low.get_legend_handles_labels()
    extra = right.get_legend_handles_labels()
    low.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=7, loc="lower left")
    return True
