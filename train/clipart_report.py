"""Scoring and reporting of ``crossfeed eval clipart``.

Per method: retrieval in both directions (mAP, P@10, R@1/5/10 with the top
category as relevance), topic-word queries (a bare category name against the
test media, mAP), and tag suggestion for the test media (precision@5 of the
proposed tags against the posts' held-out descriptive tags). The stream's
translation step is scored as it runs: its ``min_score`` is chosen on a
validation carve-out of the training split (:func:`choose_min_score`), then the
tags it would emit for the test media are scored at that threshold and at 0
(:func:`stream_metrics`). Stochastic methods are run with several seeds and
reported as mean ± sd. Output: markdown tables, one JSON object, and a PNG
contact sheet of queries and their top images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crossfeed.exceptions import InvalidInputError
from crossfeed.retrieval import suggest as serving
from crossfeed.retrieval.suggest import (
    Neighbour,
    TagSuggestion,
    VoteConfig,
    precision_at_k,
    vote_tags,
)
from crossfeed.train.metrics import average_precisions, retrieval_scores

if TYPE_CHECKING:
    from crossfeed.train.clipart_data import ClipartSplit
    from crossfeed.train.clipart_methods import Space

KS = (1, 5, 10)
SUGGEST_K = 5
# Thresholds tried for the stream step's ``suggest_min_score`` (scores are in [0, 1]).
MIN_SCORE_GRID: tuple[float, ...] = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
F_BETA = 0.5  # precision-weighted F score of the emitted tags; see choose_min_score
_ROWS_PER_QUERY = 60  # neighbour rows fetched per query before merging per post


def retrieval_metrics(space: Space, split: ClipartSplit) -> dict[str, float]:
    """Both directions plus topic-word mAP for one fitted space."""
    img = space.embed_image(split.gallery.image)
    txt = space.embed_text(split.queries.text)
    sim = np.asarray(txt, np.float64) @ np.asarray(img, np.float64).T  # (queries, gallery)
    out: dict[str, float] = {}
    for direction, scores, q, g in (
        ("t2i", sim, split.query_labels, split.gallery_labels),
        ("i2t", sim.T, split.gallery_labels, split.query_labels),
    ):
        r = retrieval_scores(scores, q, g, ks=KS)
        out[f"{direction}_map"] = r.map
        out[f"{direction}_p@10"] = r.precision_at[10]
        for k in KS:
            out[f"{direction}_r@{k}"] = r.recall_at[k]
    return out


def topic_word_aps(space: Space, split: ClipartSplit, topic_text: np.ndarray) -> dict[str, float]:
    """AP of each bare category-name query against the test media (relevance = that category)."""
    img = space.embed_image(split.gallery.image)
    sim = np.asarray(space.embed_text(topic_text), np.float64) @ np.asarray(img, np.float64).T
    aps = average_precisions(sim, np.arange(len(split.categories)), split.gallery_labels)
    return {c: float(a) for c, a in zip(split.categories, aps, strict=True) if not math.isnan(a)}


def _query_evidence(
    space: Space, split: ClipartSplit, neighbours: int
) -> tuple[list[list[Neighbour]], list[dict[str, float]] | None]:
    """Per test media item: its nearest training posts and (tag space) its tag posterior.

    The gallery holds every training post's media and text vectors, as the
    index would; a post counts once, at its best row.
    """
    train = split.train
    gal_img = np.asarray(space.embed_image(train.image), np.float32)
    gal_txt = np.asarray(space.embed_text(train.text), np.float32)
    rows = np.concatenate([gal_img, gal_txt])  # the index holds media and text rows
    row_post = train.post_ids + train.post_ids
    post_tags = {p: tuple(t) for p, t in zip(train.post_ids, train.tags, strict=True)}
    queries = np.asarray(space.embed_image(split.gallery.image), np.float32)
    sims = queries @ rows.T
    top = np.argpartition(-sims, min(_ROWS_PER_QUERY, sims.shape[1] - 1), axis=1)
    found: list[list[Neighbour]] = []
    for q in range(len(queries)):
        cand = top[q, :_ROWS_PER_QUERY]
        best: dict[str, float] = {}
        for j in cand[np.argsort(-sims[q, cand], kind="stable")]:
            best.setdefault(row_post[j], float(sims[q, j]))
        found.append([Neighbour(pid, s, post_tags[pid]) for pid, s in best.items()][:neighbours])
    vocab_tags: list[str] | None = space.info.get("vocab_tags")
    if space.image_posterior is None or vocab_tags is None:
        return found, None
    probs = space.image_posterior(split.gallery.image)
    return found, [dict(zip(vocab_tags, row.tolist(), strict=True)) for row in probs]


def suggestion_precision(
    space: Space,
    split: ClipartSplit,
    allowed: frozenset[str] | None = None,
    *,
    neighbours: int = 20,
) -> dict[str, float]:
    """P@5 of tags proposed for test media from training posts (votes, posterior, mix).

    ``allowed`` (the tag vocabulary) keeps one-off typos out.
    """
    found, posteriors = _query_evidence(space, split, neighbours)
    truth = [split.true_tags(pid) for pid in split.gallery.post_ids]
    mixes = {"votes": 0.0}
    if posteriors is not None:
        mixes |= {"posterior": 1.0, "mix": serving.POSTERIOR_MIX}
    out: dict[str, float] = {}
    for name, mix in mixes.items():
        cfg = VoteConfig(neighbours=neighbours, posterior_mix=mix)
        suggested = [
            [
                s.tag
                for s in vote_tags(
                    hits,
                    config=cfg,
                    posterior=posteriors[q] if mix > 0 and posteriors is not None else None,
                    allowed=allowed,
                    top_k=SUGGEST_K,
                )
            ]
            for q, hits in enumerate(found)
        ]
        out[f"suggest_p@5_{name}"] = precision_at_k(suggested, truth, SUGGEST_K)
    with_truth = [t for t in truth if t]
    # The best any suggester can do: a post with two true tags scores at most 2/5.
    out["suggest_p@5_ceiling"] = float(
        np.mean([min(len(t), SUGGEST_K) / SUGGEST_K for t in with_truth])
    )
    return out


# ------------------------------------------------- the stream's translation step


def stream_suggestions(
    space: Space, split: ClipartSplit, *, neighbours: int = 20, top_k: int = SUGGEST_K
) -> list[list[TagSuggestion]]:
    """Scored suggestions for each test media item, by the served recipe itself.

    Each item's nearest training posts (the in-memory stand-in for the index
    search) and, for a tag space, its posterior go through
    :func:`~crossfeed.retrieval.suggest.serving_suggestions`, the function the
    API and the stream step serve with; so a change of the served recipe
    changes what is measured. The threshold is applied later
    (:func:`emitted_scores`).
    """
    found, posteriors = _query_evidence(space, split, neighbours)
    return [
        serving.serving_suggestions(
            hits,
            posteriors[q] if posteriors is not None else None,
            limit=neighbours,
            top_k=top_k,
        )
        for q, hits in enumerate(found)
    ]


def emitted_scores(
    suggested: Sequence[Sequence[TagSuggestion]],
    truth: Sequence[Sequence[str]],
    min_score: float,
) -> dict[str, float]:
    """What the step would emit at ``min_score``, against the true tags.

    The cut is the step's own (:func:`~crossfeed.retrieval.suggest.emitted_tags`).
    Precision and recall are pooled over the items that have true tags (an
    item without any cannot tell right from wrong); coverage (share of items
    given at least one tag) and tags per item are over all items. Precision
    is NaN when nothing is emitted, and F0.5 is then 0.
    """
    if len(suggested) != len(truth):
        raise InvalidInputError("one suggestion list per item is needed")
    emitted = [serving.emitted_tags(row, min_score) for row in suggested]
    hit = shown = wanted = 0
    for tags, true in zip(emitted, truth, strict=True):
        if true:
            hit += len(set(tags) & set(true))
            shown += len(tags)
            wanted += len(set(true))
    precision = hit / shown if shown else math.nan
    recall = hit / wanted if wanted else math.nan
    b2 = F_BETA**2
    f_beta = (1 + b2) * hit / ((1 + b2) * hit + b2 * (wanted - hit) + (shown - hit)) if hit else 0.0
    n = max(len(emitted), 1)
    return {
        "precision": precision,
        "recall": recall,
        "f0.5": f_beta,
        "coverage": sum(bool(t) for t in emitted) / n,
        "tags_per_item": sum(len(t) for t in emitted) / n,
    }


def choose_min_score(
    suggested: Sequence[Sequence[TagSuggestion]],
    truth: Sequence[Sequence[str]],
    grid: Sequence[float] = MIN_SCORE_GRID,
) -> tuple[float, dict[float, dict[str, float]]]:
    """The threshold of ``grid`` with the best F0.5 on these (validation) items, and the sweep.

    F0.5 weighs precision four times as much as recall: a wrong tag shown to
    users (and stored beside their post) costs more than a missing one. Ties
    go to the lower threshold (more items get tags).
    """
    if not grid:
        raise InvalidInputError("the min_score grid is empty")
    sweep = {float(t): emitted_scores(suggested, truth, float(t)) for t in sorted(grid)}
    best = max(sweep, key=lambda t: (sweep[t]["f0.5"], -t))
    return best, sweep


def stream_metrics(
    suggested: Sequence[Sequence[TagSuggestion]],
    truth: Sequence[Sequence[str]],
    min_score: float,
) -> dict[str, float]:
    """Test numbers of the step at the chosen ``min_score`` and at 0 (the plain top-k)."""
    out: dict[str, float] = {"stream_min_score": float(min_score)}
    for prefix, threshold in (("stream", min_score), ("stream_top_k", 0.0)):
        for key, value in emitted_scores(suggested, truth, threshold).items():
            out[f"{prefix}_{key}"] = value
    return out


def aggregate(runs: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per metric: mean and sample sd over runs (sd 0 for one run)."""
    keys = [k for k in runs[0] if isinstance(runs[0][k], int | float)]
    out: dict[str, dict[str, float]] = {}
    for key in keys:
        values = np.array([r[key] for r in runs], dtype=np.float64)
        sd = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out[key] = {"mean": float(values.mean()), "sd": sd, "n": len(values)}
    return out


def _cell(stat: dict[str, float] | None) -> str:
    if stat is None or math.isnan(stat["mean"]):
        return "–"
    if stat["n"] > 1:
        return f"{stat['mean']:.3f} ± {stat['sd']:.3f}"
    return f"{stat['mean']:.3f}"


TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("t2i_map", "t→i mAP"),
    ("t2i_p@10", "t→i P@10"),
    ("t2i_r@1", "t→i R@1"),
    ("t2i_r@5", "t→i R@5"),
    ("t2i_r@10", "t→i R@10"),
    ("i2t_map", "i→t mAP"),
    ("i2t_p@10", "i→t P@10"),
    ("i2t_r@1", "i→t R@1"),
    ("i2t_r@5", "i→t R@5"),
    ("i2t_r@10", "i→t R@10"),
    ("topic_map", "topic-word mAP"),
    ("suggest_p@5_votes", "tags P@5 (votes)"),
    ("suggest_p@5_mix", "tags P@5 (votes+posterior)"),
)


STREAM_COLUMNS: tuple[tuple[str, str], ...] = (
    ("stream_min_score", "min_score (validation)"),
    ("stream_precision", "precision"),
    ("stream_recall", "recall"),
    ("stream_coverage", "coverage"),
    ("stream_tags_per_item", "tags/item"),
    ("stream_top_k_precision", "precision @0"),
    ("stream_top_k_recall", "recall @0"),
    ("stream_top_k_coverage", "coverage @0"),
    ("stream_top_k_tags_per_item", "tags/item @0"),
)


def markdown_table(
    results: dict[str, dict[str, dict[str, float]]],
    columns: Sequence[tuple[str, str]] = TABLE_COLUMNS,
) -> str:
    """One row per method, one column per ``(key, label)`` of ``columns``."""
    header = "| method | " + " | ".join(label for _, label in columns) + " |"
    rule = "|---|" + "---|" * len(columns)
    lines = [header, rule]
    for method, stats in results.items():
        cells = [_cell(stats.get(key)) for key, _ in columns]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def topic_table(per_method: dict[str, dict[str, float]], categories: Sequence[str]) -> str:
    """Topic-word AP per category (rows) and method (columns); seed-0 run for trained ones."""
    methods = list(per_method)
    lines = ["| query | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for cat in categories:
        cells = [f"{per_method[m][cat]:.3f}" if cat in per_method[m] else "–" for m in methods]
        lines.append(f"| {cat.replace('_', ' ')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def contact_sheet(
    path: Path,
    queries: Sequence[str],
    query_vectors: np.ndarray,
    gallery_vectors: np.ndarray,
    thumbnails: Any,
    relevant: Sequence[np.ndarray],
    *,
    top: int = 6,
    title: str = "",
) -> Path:
    """PNG grid: one row per text query, its ``top`` images (green frame = relevant).

    ``thumbnails(i)`` returns a PIL image of gallery item ``i`` (or None);
    ``relevant[q]`` is a bool array over the gallery for query ``q``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sims = np.asarray(query_vectors, np.float64) @ np.asarray(gallery_vectors, np.float64).T
    fig, axes = plt.subplots(
        len(queries), top + 1, figsize=(1.9 * (top + 1), 1.9 * len(queries)), squeeze=False
    )
    for q, text in enumerate(queries):
        order = np.argsort(-sims[q], kind="stable")[:top]
        label = axes[q, 0]
        label.axis("off")
        short = text if len(text) <= 60 else text[:57] + "..."
        label.text(0.0, 0.5, "\n".join(_wrap(short, 18)), fontsize=9, va="center")
        for c, i in enumerate(order, start=1):
            ax = axes[q, c]
            ax.set_xticks([])
            ax.set_yticks([])
            image = thumbnails(int(i))
            if image is not None:
                ax.imshow(image)
            color = "tab:green" if relevant[q][i] else "tab:red"
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(3)
            ax.set_title(f"{sims[q, i]:.2f}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    if current:
        lines.append(current)
    return lines[:4]
