"""Writing a benchmark report: JSON, markdown and a PNG, each written whole."""

from __future__ import annotations

import json
import os
from pathlib import Path

from crossfeed.ops.bench.plot import draw_report
from crossfeed.ops.bench.report import BenchReport, fmt


def render_markdown(report: BenchReport, png_name: str | None = None) -> str:
    env = report.environment
    lines = [f"# {report.title}", ""]
    if env:
        bits = [f"{k}: {fmt(v) if not isinstance(v, list) else v}" for k, v in env.items()]
        lines += ["Environment: " + "; ".join(bits), ""]
    if report.parameters:
        params = ", ".join(f"{k}={v}" for k, v in report.parameters.items())
        lines += [f"Parameters: {params}", ""]
    for table in report.tables:
        lines += [table.markdown(), ""]
    if png_name:
        lines += [f"![{report.name}]({png_name})", ""]
    if report.notes:
        lines += ["Notes:", ""]
        lines += [f"- {note}" for note in report.notes]
        lines.append("")
    return "\n".join(lines)


def _safe_name(name: str) -> str:
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"invalid report name {name!r}")
    return name


def write_report(report: BenchReport, out_dir: Path, *, png: bool = True) -> dict[str, Path]:
    """Write ``<name>.json``, ``<name>.png`` (unless ``png`` is False) and ``<name>.md``.

    Files are written whole to a temporary name and renamed, so a reader never sees
    half a report. Returns the paths written, by kind.
    """
    name = _safe_name(report.name)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"json": out / f"{name}.json", "md": out / f"{name}.md"}
    png_name = None
    if png:
        png_path = out / f"{name}.png"
        if draw_report(report, png_path):
            paths["png"] = png_path
            png_name = png_path.name
    _atomic_write(paths["json"], json.dumps(report.to_json(), indent=2, sort_keys=False) + "\n")
    _atomic_write(paths["md"], render_markdown(report, png_name))
    return paths


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
