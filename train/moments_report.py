"""Tables and the filmstrip PNG of ``crossfeed eval moments``."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crossfeed.train.moments_data import SampledVideo
from crossfeed.train.moments_metrics import cut

Stats = dict[str, dict[str, float]]


def cell(stat: dict[str, float] | None, digits: int = 3) -> str:
    """``mean ± sd`` (sd only over several runs); "–" when missing or NaN."""
    if stat is None or math.isnan(stat["mean"]):
        return "–"
    if stat.get("n", 1) > 1:
        return f"{stat['mean']:.{digits}f} ± {stat['sd']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}"


# Counts, shown with one decimal (means over seeds of whole numbers).
_COUNTS = frozenset({"moments_per_video", "moment_gallery", "m"})


def _row(label: str, stats: Stats, keys: Sequence[str]) -> str:
    cells = (cell(stats.get(k), 1 if k in _COUNTS else 3) for k in keys)
    return f"| {label} | " + " | ".join(cells) + " |"


def _header(first: str, labels: Sequence[str]) -> list[str]:
    return [f"| {first} | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]


def localization_table(report: dict[str, Any]) -> str:
    """Test localization per space at the chosen and the default window, with baselines."""
    lines = _header("answer (test videos)", ["R@1 (IoU ≥ 0.5)", "mean IoU", "hit", "moments/video"])
    whole: Stats | None = None
    for name, res in report["spaces"].items():
        chosen, default = res["chosen_window_s"], res["default_window_s"]
        for key, run in res["test"].items():
            stats = run["summary"]
            w = float(key)
            why = ", ".join(
                t
                for t, ok in (("chosen on validation", w == chosen), ("default", w == default))
                if ok
            )
            lines.append(
                _row(
                    f"{name} space, window {key} s ({why})",
                    stats,
                    ("r1@0.5", "iou", "hit", "moments_per_video"),
                )
            )
            random = {k: stats[f"random_{k}"] for k in ("r1@0.5", "iou", "hit")}
            lines.append(
                _row(
                    f"random moment, window {key} s",
                    random | {"m": stats["moments_per_video"]},
                    ("r1@0.5", "iou", "hit", "m"),
                )
            )
            whole = whole or {k: stats[f"whole_{k}"] for k in ("r1@0.5", "iou", "hit")}
    if whole is not None:
        lines.append(_row("whole video", whole, ("r1@0.5", "iou", "hit")) + " 1 |")
    return "\n".join(lines)


def retrieval_table(report: dict[str, Any]) -> str:
    """Topic-word retrieval over moments and over whole videos (two different tasks)."""
    lines = _header(
        "space, window (test)",
        [
            "moment gallery mAP",
            "relevant share",
            "moments",
            "whole-video gallery mAP",
            "relevant share",
        ],
    )
    keys = (
        "moment_map",
        "moment_relevant_share",
        "moment_gallery",
        "video_map",
        "video_relevant_share",
    )
    for name, res in report["spaces"].items():
        for key, run in res["test"].items():
            lines.append(_row(f"{name}, {key} s", run["summary"], keys))
    return "\n".join(lines)


def sweep_table(report: dict[str, Any]) -> str:
    """Validation R@1 (and friends) per window and space; the test R@1 for the record."""
    lines = _header(
        "space, window",
        [
            "val R@1 (IoU ≥ 0.5)",
            "val mean IoU",
            "val hit",
            "val random R@1",
            "val moments/video",
            "test R@1 (not used to choose)",
        ],
    )
    for name, res in report["spaces"].items():
        for key, stats in res["validation_sweep"].items():
            mark = " **chosen**" if float(key) == res["chosen_window_s"] else ""
            row = _row(
                f"{name}, {key} s{mark}",
                stats,
                ("r1@0.5", "iou", "hit", "random_r1@0.5", "moments_per_video"),
            )
            lines.append(f"{row} {cell(res['test_sweep_r1'].get(key))} |")
    return "\n".join(lines)


def tables(report: dict[str, Any]) -> dict[str, str]:
    """The markdown tables of the report, by name, each with a one-line caption."""
    return {
        "localization": "Localization: the top moment for each topic-word query (per video, "
        "per segment) vs the true segment; mean ± sd over seeds.\n\n" + localization_table(report),
        "retrieval": "Retrieval (a different task): topic-word AP over a gallery of all moments "
        "(relevant: majority segment's category) and over whole videos (relevant: the video "
        "contains the category). The galleries differ; 'relevant share' ≈ a random ranking's "
        "AP.\n\n" + retrieval_table(report),
        "sweep": "Window sweep on validation videos (training pictures carved out, space "
        "refitted without them); the window is chosen by val R@1.\n\n" + sweep_table(report),
    }


def filmstrip(
    path: Path,
    video: SampledVideo,
    window_s: float,
    embed: Callable[[np.ndarray], np.ndarray],
    queries: np.ndarray,
    categories: Sequence[str],
    *,
    picture: Callable[[int], Any] | None = None,
    title: str = "",
) -> Path:
    """PNG: the video's true segments, its moments, and each query's similarity per moment.

    Top: one thumbnail per segment (``picture(pool_row)``, when given) over the
    timeline of segments. Bottom: per segment's topic word, the similarity of
    every moment (a step over its span); the star marks the moment it picks.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vm = cut(video, window_s, embed)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    n_top = len(video.segments) if picture is not None else 0
    fig = plt.figure(figsize=(9, 5.5 if n_top else 4))
    ratios = [2.0, 0.6, 2.4] if n_top else [0.6, 2.4]
    grid = fig.add_gridspec(len(ratios), max(n_top, 1), height_ratios=ratios)
    if picture is not None:
        for i, (row, seg) in enumerate(zip(video.spec.images, video.segments, strict=True)):
            ax = fig.add_subplot(grid[0, i])
            ax.imshow(picture(row))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(
                f"{categories[seg.category]}\n{seg.start_s:g}-{seg.end_s:g} s",
                fontsize=8,
                color=colors[i % len(colors)],
            )
    timeline = fig.add_subplot(grid[-2, :])
    for i, seg in enumerate(video.segments):
        timeline.axvspan(seg.start_s, seg.end_s, color=colors[i % len(colors)], alpha=0.35)
    for start, end in vm.spans:
        timeline.axvline(start, color="k", lw=1)
        timeline.axvline(end, color="k", lw=1)
    timeline.plot(video.timestamps, np.full(len(video.timestamps), 0.5), "k|", ms=12)
    timeline.set_yticks([])
    timeline.set_xlim(0, max(video.duration_s, vm.spans[-1][1]))
    timeline.set_title(
        "true segments (colour), moments (black lines), sampled frames (ticks)", fontsize=8
    )
    sims_ax = fig.add_subplot(grid[-1, :], sharex=timeline)
    for i, seg in enumerate(video.segments):
        sims = vm.vectors @ np.asarray(queries[seg.category], np.float64)
        edges = [s for s, _ in vm.spans] + [vm.spans[-1][1]]
        color = colors[i % len(colors)]
        sims_ax.stairs(
            sims, edges, color=color, lw=2, label=f'"{categories[seg.category].replace("_", " ")}"'
        )
        best = int(np.argmax(sims))
        sims_ax.plot(sum(vm.spans[best]) / 2, sims[best], "*", color=color, ms=12)
    sims_ax.set_xlabel("seconds")
    sims_ax.set_ylabel("cosine similarity")
    sims_ax.legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
