"""Resident memory of processes over time, for ``crossfeed bench soak``.

RSS is read from ``/proc/<pid>/status`` (``VmRSS``; Linux), summed over the process and
its descendants, so a worker that forks helpers is measured whole. :func:`rss_stats`
turns one process' samples into the numbers the soak reports: RSS at the end of the
warm-up and at the end, the maximum, the growth fraction ``(end - warm) / warm``, a
robust growth (median of the last window against median of the first window after the
warm-up, so one garbage-collection spike at either end does not decide it) and the
slope of a least-squares line in MB per minute.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

MB = 1024 * 1024
PROC = Path("/proc")


def parse_vmrss(status_text: str) -> int | None:
    """Bytes of ``VmRSS`` in the text of a ``/proc/<pid>/status`` file; None if absent
    (a zombie, or a kernel thread)."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                unit = parts[2].lower() if len(parts) > 2 else "kb"
                scale = {"kb": 1024, "mb": MB, "b": 1}.get(unit, 1024)
                return int(parts[1]) * scale
    return None


def process_rss(pid: int, proc: Path = PROC) -> int | None:
    """RSS of one process in bytes; None when it is gone or has no memory."""
    try:
        return parse_vmrss(
            (proc / str(pid) / "status").read_text(encoding="ascii", errors="replace")
        )
    except (OSError, ValueError):
        return None


def parent_pid(stat_text: str) -> int | None:
    """The parent pid in the text of a ``/proc/<pid>/stat`` file (the field after the
    state, which follows the command name in parentheses: names may hold spaces)."""
    _, sep, rest = stat_text.rpartition(")")
    fields = rest.split()
    if not sep or len(fields) < 2 or not fields[1].lstrip("-").isdigit():
        return None
    return int(fields[1])


def descendants(pid: int, proc: Path = PROC) -> list[int]:
    """Every live descendant of ``pid`` (children, their children...), found by reading the
    parent of every process in ``/proc``."""
    children: dict[int, list[int]] = {}
    try:
        entries = [e for e in os.listdir(proc) if e.isdigit()]
    except OSError:
        return []
    for entry in entries:
        try:
            ppid = parent_pid((proc / entry / "stat").read_text(encoding="ascii", errors="replace"))
        except OSError:
            continue  # ended meanwhile
        if ppid is not None:
            children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        if child not in out:
            out.append(child)
            todo.extend(children.get(child, []))
    return out


def tree_rss(pid: int, proc: Path = PROC) -> tuple[int | None, int]:
    """(RSS of ``pid`` and its descendants in bytes, how many descendants); None for a
    process that is gone."""
    own = process_rss(pid, proc)
    if own is None:
        return None, 0
    kids = descendants(pid, proc)
    return own + sum(process_rss(k, proc) or 0 for k in kids), len(kids)


class RssSampler:
    """The RSS of named processes, sampled on each call of :meth:`sample`.

    ``samples[name]`` is a list of ``(seconds since t0, MB)``; a process that has ended
    gives no sample. ``children[name]`` is the most descendants seen at once.
    """

    def __init__(
        self,
        pids: Mapping[str, int],
        *,
        read: Callable[[int], tuple[int | None, int]] = tree_rss,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pids = dict(pids)
        self.samples: dict[str, list[tuple[float, float]]] = {n: [] for n in self.pids}
        self.children: dict[str, int] = {n: 0 for n in self.pids}
        self._read = read
        self._clock = clock
        self.t0 = clock()

    def sample(self) -> dict[str, float]:
        t = self._clock() - self.t0
        values: dict[str, float] = {}
        for name, pid in self.pids.items():
            rss, kids = self._read(pid)
            if rss is not None:
                values[name] = rss / MB
                self.samples[name].append((t, rss / MB))
                self.children[name] = max(self.children[name], kids)
        return values


def rss_stats(
    samples: list[tuple[float, float]], warmup_s: float, window_s: float = 60.0
) -> dict[str, Any]:
    """What one process' ``(seconds, MB)`` samples say about its memory after ``warmup_s``.

    ``growth`` = (last sample - first sample at or after the warm-up) / that first one;
    ``growth_robust`` = the same with the medians of the first and the last window
    (``window_s``, at most a third of the measured span); ``slope_mb_per_min`` from a
    least-squares line through every sample after the warm-up. Needs >= 3 samples after
    the warm-up (ValueError otherwise: a soak that measured nothing reports nothing).
    """
    after = sorted((t, v) for t, v in samples if t >= warmup_s)
    if len(after) < 3:
        raise ValueError(f"need >= 3 RSS samples after the warm-up, got {len(after)}")
    start, stop = after[0][0], after[-1][0]
    span = stop - start
    if span <= 0:
        raise ValueError("the RSS samples after the warm-up span no time")
    window = min(window_s, span / 3)
    first = [v for t, v in after if t <= start + window]
    last = [v for t, v in after if t >= stop - window]
    warm, end = after[0][1], after[-1][1]
    first_med, last_med = statistics.median(first), statistics.median(last)
    return {
        "samples_after": len(after),
        "warm_mb": warm,
        "end_mb": end,
        "max_mb": max(v for _, v in after),
        "max_all_mb": max(v for _, v in samples),
        "growth": (end - warm) / warm if warm > 0 else None,
        "first_window_median_mb": first_med,
        "last_window_median_mb": last_med,
        "growth_robust": (last_med - first_med) / first_med if first_med > 0 else None,
        "window_s": window,
        "slope_mb_per_min": _slope([t for t, _ in after], [v for _, v in after]) * 60.0,
    }


def _slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``ys`` over ``xs`` (per unit of x)."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def worst_growth(stats: Mapping[str, Mapping[str, Any]], key: str = "growth") -> float | None:
    """The largest ``key`` over the processes (None when none has one)."""
    values = [float(s[key]) for s in stats.values() if s.get(key) is not None]
    return max(values) if values else None
