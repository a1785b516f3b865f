"""PNG figures of the bench reports (matplotlib, Agg backend: no display needed).

One panel per bench: engine start times, encoder throughput per modality, ingest
rows/s per modality, query latency distributions. ``bench all`` draws every panel
it has results for on one figure. Panels read only ``report.results``, so a
figure can be redrawn from a saved JSON file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crossfeed.ops.bench.report import BenchReport

log = logging.getLogger(__name__)


def _log_y(ax: Any, label: str) -> None:
    """Log scale with plain tick labels (0.1, 2, 50 rather than 10^-1, 2x10^0)."""
    from matplotlib.ticker import FuncFormatter

    def minor(value: float, _pos: int) -> str:  # label 2x and 5x only: fewer, readable ticks
        return f"{value:g}" if f"{value:.0e}"[0] in "25" else ""

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(minor))
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_ylabel(label)


MODALITY_COLORS = {"text": "#4c72b0", "image": "#dd8452", "video": "#55a868"}


def _bars(
    ax: Any,
    labels: list[str],
    mid: list[float],
    lo: list[float] | None = None,
    hi: list[float] | None = None,
) -> None:
    """Bars at ``mid`` with min-max whiskers when ``lo``/``hi`` are given."""
    colors = [MODALITY_COLORS.get(label, "#8172b2") for label in labels]
    err = None
    if lo is not None and hi is not None:
        err = [
            [m - a for m, a in zip(mid, lo, strict=True)],
            [b - m for m, b in zip(mid, hi, strict=True)],
        ]
    ax.bar(labels, mid, color=colors, yerr=err, capsize=4)
    for i, value in enumerate(mid):
        ax.annotate(f"{value:.3g}", (i, value), ha="center", va="bottom", fontsize=8)


def plot_engines(ax: Any, results: dict[str, Any]) -> bool:
    engines = results.get("engines") or {}
    names = [n for n, r in engines.items() if r.get("summary")]
    if not names:
        return False
    s = [engines[n]["summary"] for n in names]
    _bars(ax, names, [x["p50"] for x in s], [x["min"] for x in s], [x["max"] for x in s])
    _log_y(ax, "seconds, spawn -> ready (log)")
    ax.set_title("engine start time (median, min-max)")
    return True


def plot_encoders(ax: Any, results: dict[str, Any]) -> bool:
    if results.get("runtimes"):
        return _plot_runtimes(ax, results)
    thr = results.get("throughput") or {}
    names = [m for m in ("text", "image", "video") if thr.get(m, {}).get("summary")]
    if not names:
        return False
    s = [thr[m]["summary"] for m in names]
    _bars(ax, names, [x["p50"] for x in s], [x["min"] for x in s], [x["max"] for x in s])
    _log_y(ax, "items / s (log)")
    device = results.get("device", "?")
    ax.set_title(f"encoder throughput on {device} (median, min-max)")
    return True


def _plot_runtimes(ax: Any, results: dict[str, Any]) -> bool:
    """torch and ONNX Runtime side by side per modality, speed-ups annotated."""
    side = results["runtimes"]
    names = [m for m in ("text", "image", "video") if m in side.get("torch", {})]
    if not names:
        return False
    width = 0.38
    bars = (
        (-width / 2, "torch", "torch", "#8c8c8c"),
        (width / 2, "onnx", "onnxruntime", "#4c72b0"),
    )
    for shift, runtime, label, color in bars:
        values = [side[runtime][m]["p50"] for m in names]
        xs = [i + shift for i in range(len(names))]
        ax.bar(xs, values, width, color=color, label=label)
        for x, value in zip(xs, values, strict=True):
            ax.annotate(f"{value:.3g}", (x, value), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)))
    speedups = results.get("speedup") or {}
    ax.set_xticklabels([f"{m}\n{speedups.get(m) or 0:.2f}x" for m in names])
    _log_y(ax, "items / s (log)")
    ax.legend(fontsize=8)
    threads = results.get("cpu_threads", "?")
    ax.set_title(f"encoders on cpu, {threads} thread(s): torch vs onnxruntime (median)")
    return True


def plot_ingest(ax: Any, results: dict[str, Any]) -> bool:
    phases = results.get("phases") or {}
    names = [m for m in ("text", "image", "video") if phases.get(m, {}).get("rows_per_s")]
    if not names:
        return False
    values = [phases[m]["rows_per_s"] for m in names]
    _bars(ax, names, values)
    _log_y(ax, "rows indexed / s (log)")
    fresh = (results.get("freshness_idle_s") or {}).get("summary")
    title = "ingest, Kafka -> Milvus"
    if fresh:
        title += f" (freshness p50 {fresh['p50']:.2f} s)"
    ax.set_title(title)
    return True


def plot_query(ax: Any, results: dict[str, Any]) -> bool:
    kinds = results.get("kinds") or {}
    data, labels = [], []
    for kind, entry in kinds.items():
        for mode in ("uncached", "cached"):
            samples = (entry.get(mode) or {}).get("samples_ms") or []
            if samples:
                data.append(samples)
                labels.append(f"{kind}\n{mode}")
    if not data:
        return False
    ax.boxplot(data, showfliers=True, whis=(5, 95))
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
    _log_y(ax, "ms per request, HTTP round trip (log)")
    ax.set_title("query latency (box: p25-p75, whiskers: p5-p95)")
    return True


def plot_sources(ax: Any, results: dict[str, Any]) -> bool:
    modes = {n: m for n, m in (results.get("modes") or {}).items() if m.get("summary")}
    if not modes:
        return False
    s = [m["summary"] for m in modes.values()]
    _bars(ax, list(modes), [x["p50"] for x in s], [x["min"] for x in s], [x["max"] for x in s])
    _log_y(ax, "Jetstream events / s (log)")
    ax.set_title("Bluesky connector throughput (median, min-max)")
    return True


def plot_live(ax: Any, results: dict[str, Any]) -> bool:
    """p50/p95 of produce -> searchable and produce -> SSE, per subscription count."""
    runs = results.get("latency") or {}
    if not runs:
        return False
    labels: list[str] = []
    bars: dict[str, list[float]] = {
        "searchable p50": [],
        "searchable p95": [],
        "SSE p50": [],
        "SSE p95": [],
    }
    for n, run in runs.items():
        labels.append(f"{int(n):,} subscription(s)")
        for key, part, q in (
            ("searchable p50", "searchable_s", "p50"),
            ("searchable p95", "searchable_s", "p95"),
            ("SSE p50", "sse_s", "p50"),
            ("SSE p95", "sse_s", "p95"),
        ):
            bars[key].append(float(run.get(part, {}).get(q) or 0.0))
    width = 0.2
    for k, (name, values) in enumerate(bars.items()):
        xs = [i + (k - 1.5) * width for i in range(len(labels))]
        ax.bar(xs, values, width, label=name)
    ax.axhline(2.0, color="grey", linestyle="--", linewidth=1, label="SSE p95 target")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("seconds from produce")
    cost = results.get("index_cost") or {}
    ratio_ = cost.get("throughput_ratio")
    rate = results.get("rate_posts_per_s")
    title = f"at {rate:.1f} posts/s" if rate else "latency"
    if ratio_ is not None:
        title += (
            f"; index stage with {cost.get('subscriptions', 0):,} subs: {ratio_:.0%} throughput"
        )
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return True


def plot_query_scale(ax: Any, results: dict[str, Any]) -> bool:
    """Latency boxes per query kind, and requests/s per client count on a second axis."""
    latency = results.get("latency") or {}
    data = [e["samples_ms"] for e in latency.values() if e.get("samples_ms")]
    if not data:
        return False
    labels = [name.replace("filtered by ", "filter\n") for name in latency]
    ax.boxplot(data, showfliers=True, whis=(1, 99))
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
    _log_y(ax, "ms per request, HTTP round trip (log)")
    recall = (results.get("recall") or {}).get("none", {}).get("mean")
    title = f"{results.get('rows', 0):,} rows: latency (whiskers p1-p99)"
    if recall is not None:
        title += f", recall@10 {recall:.3f}"
    ax.set_title(title, fontsize=10)
    rates = [e for e in results.get("throughput") or [] if e.get("per_s")]
    if rates:
        inset = ax.inset_axes((0.62, 0.62, 0.35, 0.33))
        for mode in ("uncached", "cached"):
            pts = [(e["clients"], e["per_s"]) for e in rates if e["mode"] == mode]
            if pts:
                inset.plot(*zip(*pts, strict=True), marker="o", label=mode)
        inset.set_xscale("log", base=2)
        inset.set_xlabel("clients", fontsize=7)
        inset.set_ylabel("req/s", fontsize=7)
        inset.tick_params(labelsize=6)
        inset.legend(fontsize=6)
    return True


def plot_ingest_trends(ax: Any, results: dict[str, Any]) -> bool:
    from crossfeed.ops.bench.trends import plot_trends_overhead

    return plot_trends_overhead(ax, results)


def plot_workers(ax: Any, results: dict[str, Any]) -> bool:
    """Text rows/s with 1 and 2 workers; the kill run's outcome in the title."""
    phases = [(label, results.get(key) or {}) for label, key in WORKER_RUNS]
    if not all(p.get("rows_per_s") for _, p in phases):
        return False
    _bars(ax, [label for label, _ in phases], [p["rows_per_s"] for _, p in phases])
    ax.set_ylabel("text rows / s, end to end")
    kill = results.get("kill") or {}
    title = "workers in one consumer group"
    if kill.get("killed"):
        title += f"\n1 of 2 killed: {kill['lost']} lost, {kill['duplicated']} duplicated"
    ax.set_title(title, fontsize=10)
    return True


WORKER_RUNS = (("1 worker", "one_worker"), ("2 workers", "two_workers"))


def plot_soak(ax: Any, results: dict[str, Any]) -> bool:
    from crossfeed.ops.bench.soak_report import plot_soak as draw

    return draw(ax, results)


PANELS: dict[str, Callable[[Any, dict[str, Any]], bool]] = {
    "query_scale": plot_query_scale,
    "scale": plot_query_scale,  # the part of `bench all`
    "workers": plot_workers,
    "engines": plot_engines,
    "encoders": plot_encoders,
    "ingest": plot_ingest,
    "ingest-trends": plot_ingest_trends,
    "query": plot_query,
    "sources": plot_sources,
    "live": plot_live,
    "soak": plot_soak,
}


def draw_report(report: BenchReport, path: Path) -> bool:
    """Draw ``report`` to ``path``; False (and no file) when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    if report.name in PANELS:
        sections = [(report.name, report.results)]
    else:
        sections = [
            (n, report.results[n]) for n in PANELS if isinstance(report.results.get(n), dict)
        ]
    if not sections:
        return False
    cols = 1 if len(sections) == 1 else 2
    rows = (len(sections) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 4.5 * rows), squeeze=False)
    drawn = 0
    try:
        flat = list(axes.flat)
        for ax, (name, results) in zip(flat, sections, strict=False):
            if PANELS[name](ax, results):
                drawn += 1
            else:
                ax.set_axis_off()
        for ax in flat[len(sections) :]:
            ax.set_axis_off()
        if drawn:
            fig.suptitle(report.title)
            fig.tight_layout()
            fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return drawn > 0
