"""Combining the per-bench reports of ``crossfeed bench all`` into one report.

The combined JSON keeps each bench's ``results`` and ``parameters`` under its name;
the markdown starts with a headline table (the numbers people ask for first) and
then every bench's own tables; the PNG has one panel per bench.
"""

from __future__ import annotations

from typing import Any

from crossfeed.ops.bench.report import BenchReport, Table
from crossfeed.ops.bench.targets import FIGURES, figures


def headline(reports: dict[str, BenchReport]) -> Table:
    """One row per headline number: engine starts, encoder and ingest rates, latencies."""
    table = Table("Headline numbers", ["measure", "value", "unit", "detail"])
    if "engines" in reports:
        for name, r in reports["engines"].results["engines"].items():
            s = r["summary"]
            table.add(f"{name} start (median)", s["p50"], "s", f"n={s['n']}, max {s['max']:.2f}")
    if "encoders" in reports:
        res = reports["encoders"].results
        for name, t in res["throughput"].items():
            rel = res["ratios"].get(f"{name}_vs_text")
            detail = f"{rel:.3g} x text" if rel is not None else ""
            table.add(f"encoder {name} (median)", t["summary"]["p50"], t["unit"], detail)
        table.add("model load", res["load_s"]["total"], "s", res["device"])
        for name, speedup in (res.get("speedup") or {}).items():
            agree = (res.get("agreement") or {}).get(name, {})
            detail = f"cosine to torch {agree['cos_mean']:.4f}" if agree else ""
            table.add(f"encoder {name} onnxruntime / torch", speedup, "x", detail)
    if "ingest" in reports:
        res = reports["ingest"].results
        for name, p in res["phases"].items():
            rel = res["ratios"].get(f"{name}_vs_text")
            detail = f"{rel:.3g} x text" if rel is not None else ""
            table.add(f"ingest {name}", p["rows_per_s"], "rows/s", detail)
        table.add("ingest overall", res["overall"]["rows_per_s"], "rows/s", "")
        fresh = res["freshness_idle_s"]["summary"]
        if fresh:
            table.add("freshness p50", fresh["p50"], "s", f"p95 {fresh['p95']:.2f} s, idle")
    if "query" in reports:
        for kind, entry in reports["query"].results["kinds"].items():
            u, c = entry["uncached"]["summary"], entry["cached"]["summary"]
            table.add(f"query {kind} uncached p50", u["p50"], "ms", f"p95 {u['p95']:.1f}")
            ratio = entry["ratio_p50"]
            detail = f"uncached/cached {ratio:.3g}" if ratio is not None else ""
            table.add(f"query {kind} cached p50", c["p50"], "ms", detail)
    if "soak" in reports:
        res = reports["soak"].results
        robust = res.get("rss_growth_robust")
        detail = (
            f"robust {robust:+.1%}, {res['posts']['lost']} posts lost" if robust is not None else ""
        )
        table.add("soak RSS growth (worst process)", res["rss_growth"], "fraction", detail)
    return table


def target_table(results: dict[str, dict[str, Any]]) -> Table:
    """figure | value | target | met? | from: every headline figure beside its target."""
    values = figures(results)
    table = Table("Figures and targets", ["figure", "value", "target", "met?", "from"])
    for fig in FIGURES:
        target = fig.target
        bound = f"{target['op']} {target['value']:g} {fig.unit}".strip() if target else "-"
        met = values["met"].get(fig.key)
        source = fig.source
        if fig.source.startswith("scale") and values["scale_rows"]:
            source += f", {values['scale_rows']:,} rows"
        value = values[fig.key]
        table.add(fig.label, value, bound, "-" if met is None else met, source)
    table.note = "- : not measured in this run (part skipped) or no target."
    return table


def combine(reports: dict[str, BenchReport]) -> BenchReport:
    parts = {name: r.results for name, r in reports.items()}
    tables = [target_table(parts), headline(reports)]
    notes: list[str] = []
    for name, report in reports.items():
        for table in report.tables:
            tables.append(Table(f"{name}: {table.title}", table.columns, table.rows, table.note))
        notes += [f"{name}: {note}" for note in report.notes]
    results: dict[str, Any] = {**parts, "figures": figures(parts)}
    return BenchReport(
        name="all",
        title="crossfeed bench: all",
        parameters={name: r.parameters for name, r in reports.items()},
        results=results,
        tables=tables,
        notes=notes,
    )
