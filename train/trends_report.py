"""Outputs of ``crossfeed eval trends``: JSON, a markdown table, a PNG of a few bursts."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crossfeed.train.trends_data import Stream

Replay = Any  # crossfeed.train.trends_eval.Replay (which imports this module)

log = logging.getLogger(__name__)

ROWS = (
    ("recall", "recall (hashtag + meaning)", "{:.3f}"),
    ("recall_hashtag", "recall, hashtag bursts", "{:.3f}"),
    ("recall_meaning", "recall, meaning bursts", "{:.3f}"),
    ("delay_p50_windows", "delay p50 (windows)", "{:g}"),
    ("delay_p95_windows", "delay p95 (windows)", "{:g}"),
    ("false_per_24h", "false trends per 24 h", "{:.2f}"),
    ("purity", "purity of flagged meaning clusters", "{:.3f}"),
    ("spam_flagged", "spam bursts flagged", "{:d}"),
)


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "n/a"
    try:
        return spec.format(value)
    except (ValueError, TypeError):
        return str(value)


def markdown(result: dict[str, Any]) -> str:
    p = result["params"]
    lines = [
        f"# crossfeed eval trends, seed {p['seed']}",
        "",
        f"{result['stream']['posts']} posts over {result['stream']['event_hours']} h of event "
        f"time ({result['stream']['posts_per_min']} posts/min), window {p['window_s']:g} s, "
        f"{p['bursts_per_kind']} bursts of each kind, {p['background_h']:g} h of background "
        f"with nothing injected. Text rows: {p.get('space', 'untrained')} space.",
        "",
        "| metric | crossfeed | baseline (posts >= "
        f"{p['baseline_threshold_posts']}/window) | target met |",
        "| --- | --- | --- | --- |",
    ]
    met = result.get("targets_met", {})
    for key, name, spec in ROWS:
        mark = {True: "yes", False: "NO"}.get(met.get(key), "")  # type: ignore[call-overload]
        ours = _fmt(result.get(key), spec)
        base = _fmt(result["baseline"].get(key), spec)
        lines.append(f"| {name} | {ours} | {base} | {mark} |")
    t = result["timing"]
    lines += [
        "",
        f"Tracker: {t['observe_us_per_post']} us per post observed (memory store, one thread); "
        f"{result['stream']['clusters_at_end']} clusters at the end.",
    ]
    return "\n".join(lines) + "\n"


def write_outputs(
    out: Path,
    result: dict[str, Any],
    ours: list[dict[str, Any]],
    base: list[dict[str, Any]],
    rep: Replay,
    stream: Stream,
    *,
    plot: bool = True,
) -> dict[str, Path]:
    seed = result["params"]["seed"]
    paths = {
        "json": out / f"trends-seed{seed}.json",
        "md": out / f"trends-seed{seed}.md",
        "bursts": out / f"trends-seed{seed}-bursts.json",
    }
    paths["json"].write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    paths["md"].write_text(markdown(result), encoding="utf-8")
    paths["bursts"].write_text(
        json.dumps({"crossfeed": ours, "baseline": base}, indent=1) + "\n", encoding="utf-8"
    )
    if plot:
        png = out / f"trends-seed{seed}.png"
        if draw(png, ours, rep, stream, result["params"]["window_s"]):
            paths["png"] = png
    return paths


def _item_of(burst: dict[str, Any], rep: Replay) -> str | None:
    """The item to draw for a burst: its tag, or the cluster flagged for it."""
    if burst["kind"] == "hashtag":
        return f"h:{burst['target']}"
    if burst["kind"] == "spam" and str(burst["target"]).startswith("#"):
        return f"h:{str(burst['target'])[1:]}"
    w = burst.get("detected_window")
    if w is not None:
        clusters = [i for i in rep.flags.get(w, {}) if i.startswith("c:")]
        if clusters:
            return clusters[0]
    # the cluster where the burst's posts went most, in its onset window
    counts = rep.counts.get(burst["onset_window"] + 1, {})
    ranked = sorted((n, i) for i, n in counts.items() if i.startswith("c:"))
    return ranked[-1][1] if ranked else None


def draw(path: Path, bursts: list[dict[str, Any]], rep: Replay, stream: Stream, ws: float) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no PNG")
        return False
    chosen = []
    for kind in ("hashtag", "meaning", "spam"):
        of_kind = [b for b in bursts if b["kind"] == kind]
        chosen += of_kind[:2]
    fig, axes = plt.subplots(len(chosen), 1, figsize=(9, 2.2 * len(chosen)), squeeze=False)
    for ax, b in zip(axes[:, 0], chosen, strict=True):
        item = _item_of(b, rep)
        ow = b["onset_window"]
        lo, hi = ow - 30, math.floor(b["end"] / ws) + 15
        xs = list(range(lo - ow, hi - ow))
        key = item or ""
        none: dict[str, int] = {}
        authors = [rep.counts.get(w, none).get(key, 0) for w in range(lo, hi)]
        posts = [rep.posts.get(w, none).get(key, 0) for w in range(lo, hi)]
        ax.plot(xs, authors, color="#4c72b0", label="distinct authors")
        ax.plot(xs, posts, color="#999999", lw=0.8, ls="--", label="posts")
        flagged = [w - ow for w in range(lo, hi) if item in rep.flags.get(w, {})]
        base_flagged = [w - ow for w in range(lo, hi) if item in rep.baseline.get(w, {})]
        top = max([*authors, *posts, 1])
        ax.scatter(
            flagged,
            [top * 1.08] * len(flagged),
            marker="v",
            color="#c44e52",
            s=18,
            label="crossfeed flags",
        )
        ax.scatter(
            base_flagged,
            [top * 1.18] * len(base_flagged),
            marker="x",
            color="#55a868",
            s=18,
            label="baseline flags",
        )
        ax.axvline(0, color="black", lw=1)
        ax.axvspan(0, (b["end"] - b["onset"]) / ws, color="#f0e0a0", alpha=0.4)
        ax.set_title(
            f"{b['kind']} burst {b['index']}: {item} ({b['target']}, "
            f"x{b['multiplier']:.1f}, {b['posts']} posts)",
            fontsize=9,
        )
        ax.set_ylabel("per window")
    axes[-1, 0].set_xlabel("windows from onset (shaded: the injected burst)")
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=8, loc="lower center", ncol=4)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
