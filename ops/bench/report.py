"""Statistics and report files shared by the ``crossfeed bench`` commands.

Every bench produces a :class:`BenchReport`: a JSON-ready ``results`` dict plus
markdown tables. :func:`crossfeed.ops.bench.output.write_report` writes ``<out>/<name>.json`` and
``<out>/<name>.md`` (and the PNG, drawn by :mod:`crossfeed.ops.bench.plot`).

Numbers are reported the way one run can support them: distributions as
n/min/p50/p95/max over repeats or requests, and speed comparisons as ratios of
quantities measured in the same run (e.g. cached/uncached p50), never as absolute
targets: a shared 2-core laptop and a GPU server differ by orders of magnitude, but
the ratios say something about the design on both.
"""

from __future__ import annotations

import math
import os
import platform
import socket
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "BenchReport",
    "Table",
    "environment",
    "fmt",
    "free_port",
    "percentile",
    "rate",
    "ratio",
    "summarize",
]

REPORT_VERSION = 1


# --------------------------------------------------------------------------- statistics


def _finite(values: Iterable[float]) -> list[float]:
    out = []
    for v in values:
        f = float(v)
        if not math.isfinite(f):
            raise ValueError(f"non-finite sample {v!r}")
        out.append(f)
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear between closest ranks (numpy's default).

    Raises ValueError on an empty sample or a ``q`` outside 0..100, so a bench that
    measured nothing cannot report a number.
    """
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    data = sorted(_finite(values))
    if not data:
        raise ValueError("percentile of an empty sample")
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def summarize(values: Sequence[float]) -> dict[str, float | int]:
    """``{n, min, p50, p95, max, mean}`` of a non-empty sample (p50 is the median)."""
    data = _finite(values)
    if not data:
        raise ValueError("cannot summarize an empty sample")
    return {
        "n": len(data),
        "min": min(data),
        "p50": percentile(data, 50),
        "p95": percentile(data, 95),
        "max": max(data),
        "mean": sum(data) / len(data),
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or the divisor is <= 0."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return float(numerator) / float(denominator)


def rate(count: float, seconds: float) -> float | None:
    """Items per second; None when no time elapsed (never a division by zero)."""
    return ratio(count, seconds)


def fmt(value: Any, digits: int = 3) -> str:
    """A compact cell: ``digits`` significant figures, '-' for missing values."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        if value == 0:
            return "0"
        magnitude = math.floor(math.log10(abs(value)))
        decimals = max(0, digits - 1 - magnitude)
        return f"{value:,.{decimals}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


# --------------------------------------------------------------------------- reports


@dataclass
class Table:
    """One markdown table; cells are formatted with :func:`fmt`."""

    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    note: str = ""

    def __post_init__(self) -> None:
        for row in self.rows:
            self._check(row)

    def _check(self, row: Sequence[Any]) -> None:
        if len(row) != len(self.columns):
            raise ValueError(f"table {self.title!r}: row {row!r} has {len(row)} cells")

    def add(self, *cells: Any) -> None:
        self._check(cells)
        self.rows.append(list(cells))

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        for row in self.rows:
            lines.append("| " + " | ".join(fmt(c) for c in row) + " |")
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines)


@dataclass
class BenchReport:
    """What one bench measured: JSON ``results``, markdown ``tables`` and ``notes``."""

    name: str
    title: str
    parameters: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def to_json(self) -> dict[str, Any]:
        return {
            "report_version": REPORT_VERSION,
            "bench": self.name,
            "title": self.title,
            "created_at": self.created_at,
            "environment": self.environment,
            "parameters": self.parameters,
            "results": self.results,
            "notes": self.notes,
        }


def environment(**extra: Any) -> dict[str, Any]:
    """Where the numbers come from: CPUs, load average (other work on the machine), versions."""
    from crossfeed import __version__

    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "crossfeed": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_avg_1_5_15": load,
        **extra,
    }


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it; a race is unlikely)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
