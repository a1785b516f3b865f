"""``crossfeed bench ingest --trends compare``: what the trends step costs the stream.

The ingest bench (:mod:`crossfeed.ops.bench.ingest`) runs ``rounds`` times with the
trends step off and ``rounds`` times with it on (``CROSSFEED_TRENDS=0``/``1`` in the
worker), alternating (off, on, off, on...) so that a machine that gets busier or quieter
during the run weighs on both alike. Each run has its own topics, collection and Redis
prefix, and its own worker process. Per phase the median rows/s of each mode is kept;
the overhead is ``1 - on/off`` (the target: at most 5 %).

With the step on, the run also reads back what the tracker counted (Redis keys under the
run's ``<prefix>:trends``), so a step that silently failed cannot pass as a cheap one.
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path
from typing import Any

from crossfeed.core.settings import Settings
from crossfeed.ops.bench.report import BenchReport, Table, ratio
from crossfeed.ops.exceptions import BenchError

log = logging.getLogger(__name__)

MODES = ("off", "on")
TARGET_OVERHEAD = 0.05


def with_trends(settings: Settings, enabled: bool, metrics_port: int | None = None) -> Settings:
    """A copy of ``settings`` whose worker runs the trends step or not (and serves its
    metrics on ``metrics_port``, when given)."""
    import copy

    s = copy.copy(settings)
    s.trends = settings.trends.model_copy(update={"enabled": enabled})
    if metrics_port is not None:
        s.stream = settings.stream.model_copy(update={"metrics_port": metrics_port})
    return s


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def step_metrics(port: int) -> dict[str, float]:
    """The worker's trends-step counters, from its ``/metrics`` ({} when unreachable)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5.0).text
    except httpx.HTTPError as exc:
        log.warning("cannot read the worker's metrics: %s", exc)
        return {}
    wanted = {
        "crossfeed_trends_observed_total": "observed",
        "crossfeed_trends_errors_total": "errors",
        "crossfeed_trends_dropped_total": "dropped",
        "crossfeed_trends_batch_seconds_sum": "busy_s",
        "crossfeed_trends_batch_seconds_count": "calls",
    }
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                out[wanted[sample.name]] = float(sample.value)
    return out


def trend_keys(settings: Settings) -> int:
    """Redis keys the tracker wrote under the run's prefix (0 when Redis cannot say)."""
    import redis

    try:
        client = redis.Redis.from_url(settings.redis.url.get_secret_value(), socket_timeout=5.0)
        try:
            return sum(1 for _ in client.scan_iter(f"{settings.redis.key_prefix}:trends:*"))
        finally:
            client.close()
    except redis.RedisError as exc:
        log.warning("cannot count the tracker's keys: %s", exc)
        return 0


def run_trends_overhead(
    base: Settings,
    corpus: Any,
    out: Path,
    *,
    rounds: int,
    freshness_samples: int,
    progress: bool,
) -> dict[str, Any]:
    """``rounds`` ingest runs per mode, alternating; per-run results and the comparison."""
    from crossfeed.ops.bench.ingest import run_ingest
    from crossfeed.ops.bench.live import BenchNames, bench_settings, live_pipeline

    if rounds < 1:
        raise BenchError("--rounds must be positive")
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    for n in range(rounds):
        for mode in MODES:
            names = BenchNames.new()
            port = _free_port()
            settings = with_trends(
                bench_settings(base, names, corpus.media_roots),
                enabled=mode == "on",
                metrics_port=port,
            )
            log.info("ingest round %d/%d with the trends step %s", n + 1, rounds, mode)
            with live_pipeline(settings, names, out / f"ingest-trends-{mode}-{n}.log") as live:
                result, _ = run_ingest(
                    live, corpus.posts, freshness_samples=freshness_samples, progress=progress
                )
                result["trend_keys"] = trend_keys(settings)
                if mode == "on":
                    step = step_metrics(port)
                    seconds = result["overall"]["seconds"]
                    if step.get("busy_s") is not None and seconds:
                        step["busy_share"] = step["busy_s"] / seconds
                    result["step"] = step
            runs[mode].append(result)
    if not any(r["trend_keys"] for r in runs["on"]):
        raise BenchError("the trends step counted nothing in any run: see the worker logs")
    return {"runs": runs, "comparison": compare(runs)}


def _median_rate(results: list[dict[str, Any]], phase: str | None) -> float | None:
    values = []
    for r in results:
        part = r["overall"] if phase is None else r["phases"].get(phase)
        if part and part.get("rows_per_s"):
            values.append(float(part["rows_per_s"]))
    return statistics.median(values) if values else None


def compare(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per phase (and overall): median rows/s off and on, on/off, overhead = 1 - on/off."""
    phases = sorted({p for r in runs["off"] + runs["on"] for p in r["phases"]})
    out: dict[str, Any] = {}
    for phase in [*phases, None]:
        off, on = _median_rate(runs["off"], phase), _median_rate(runs["on"], phase)
        kept = ratio(on, off)
        out[phase or "all"] = {
            "rows_per_s_off": off,
            "rows_per_s_on": on,
            "on_vs_off": kept,
            "overhead": None if kept is None else 1.0 - kept,
        }
    return out


def build_trends_report(results: dict[str, Any], **parameters: Any) -> BenchReport:
    table = Table(
        "Rows indexed per second with and without the trends step (median of the rounds)",
        ["phase", "rows/s off", "rows/s on", "on / off", "overhead"],
    )
    for phase, c in results["comparison"].items():
        over = c["overhead"]
        table.add(
            phase,
            c["rows_per_s_off"],
            c["rows_per_s_on"],
            c["on_vs_off"],
            "-" if over is None else f"{over * 100:+.1f} %",
        )
    per_run = Table(
        "Each run",
        [
            "mode",
            "round",
            "rows/s (all)",
            "tracker keys",
            "observed",
            "tracker busy (s)",
            "busy / ingest time",
        ],
    )
    for mode in MODES:
        for n, r in enumerate(results["runs"][mode], start=1):
            step = r.get("step") or {}
            share = step.get("busy_share")
            per_run.add(
                mode,
                n,
                r["overall"]["rows_per_s"],
                r.get("trend_keys", "-"),
                step.get("observed", "-"),
                step.get("busy_s", "-"),
                "-" if share is None else f"{share * 100:.1f} %",
            )
    notes = [
        "Runs alternate off, on, off, on... each with a fresh worker process, topics, "
        "collection and Redis prefix; phases as in `crossfeed bench ingest`.",
        f"Target: the trends step costs at most {TARGET_OVERHEAD:.0%} of ingest throughput "
        "(overhead = 1 - on/off; negative values are run-to-run noise).",
        "'tracker keys': Redis keys the tracker wrote in that run (0 with the step off).",
        "'tracker busy': time the step's thread spent in tracker calls (the worker's "
        "crossfeed_trends_batch_seconds); over the phases' ingest time it bounds what the "
        "step can take from the stream, free of run-to-run noise.",
    ]
    return BenchReport(
        name="ingest-trends",
        title="crossfeed bench: ingest with and without the trends step",
        parameters=parameters,
        results=results,
        tables=[table, per_run],
        notes=notes,
    )


def plot_trends_overhead(ax: Any, results: dict[str, Any]) -> bool:
    """Grouped bars: rows/s per phase with the step off and on."""
    comparison = results.get("comparison") or {}
    names = [p for p, c in comparison.items() if c.get("rows_per_s_off") and c.get("rows_per_s_on")]
    if not names:
        return False
    xs = range(len(names))
    width = 0.38
    off = [comparison[p]["rows_per_s_off"] for p in names]
    on = [comparison[p]["rows_per_s_on"] for p in names]
    ax.bar([x - width / 2 for x in xs], off, width, label="trends off", color="#8c8c8c")
    ax.bar([x + width / 2 for x in xs], on, width, label="trends on", color="#4c72b0")
    for x, p in zip(xs, names, strict=True):
        over = comparison[p]["overhead"]
        top = max(comparison[p]["rows_per_s_off"], comparison[p]["rows_per_s_on"])
        ax.annotate(f"{over * 100:+.1f} %", (x, top), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("rows indexed / s")
    ax.set_title("ingest with and without the trends step")
    ax.legend(fontsize=8)
    return True
