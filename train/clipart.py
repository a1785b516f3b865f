"""``crossfeed eval clipart``: end-to-end cross-modal retrieval on the sample corpus.

From raw pixels and raw post text: the corpus is split by source picture
(:mod:`.clipart_data`), tower features are extracted (and cached), every
method is fitted on the training split with the noisy hashtags as its only
supervision (:mod:`.clipart_methods`), and the test split is scored with the
top-level category as relevance (:mod:`.clipart_report`): text->image and
image->text mAP, P@10, R@1/5/10; bare topic-word queries ("animals");
precision@5 of tags proposed for test media; the stream translation step's
``min_score``, chosen per method on a validation carve-out of the training
split, and the precision, recall and coverage of the tags it would emit for the
test media. Trained methods run over several seeds (mean ± sd). The best
space is saved as a head version so the stream workers embed into it
("latest"), and a contact sheet PNG shows what the trained space retrieves
for a few queries.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crossfeed.exceptions import InvalidInputError

if TYPE_CHECKING:
    from crossfeed.core.settings import Settings
    from crossfeed.encoders.model import SharedSpaceEmbedder
    from crossfeed.encoders.vocab import TagVocab
    from crossfeed.train.clipart_data import ClipartSplit
    from crossfeed.train.clipart_methods import Space

log = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("lsq", "ridge", "cca", "embedding", "tags")
BASELINES: tuple[str, ...] = ("lsq", "ridge", "cca")
TRAINED: tuple[str, ...] = ("embedding", "tags")
TARGET_GAIN = 0.15  # the trained space must beat the best tuned baseline by 15 % (t->i mAP)
# Share of the training posts (whole source pictures) held out to choose the
# stream step's min_score: the same share the test split takes of the corpus.
STREAM_VALIDATION_FRACTION = 0.2


@dataclass
class ClipartEvalOptions:
    out_dir: Path
    corpus: Path | None = None
    test_fraction: float = 0.2
    split_seed: int = 0
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = METHODS
    tag_objectives: dict[str, float] = field(default_factory=lambda: {"bce": 1.0})
    embedding_objectives: dict[str, float] = field(
        default_factory=lambda: {"bce": 1.0, "infonce": 1.0}
    )
    epochs: int | None = None
    topics: float | None = None  # topic threshold of the tag space; None = chosen on validation
    save: bool = True
    progress: bool = True
    sheet: bool = True


def fit_space(
    method: str,
    split: ClipartSplit,
    vocab: TagVocab,
    y: np.ndarray,
    seed: int,
    opts: ClipartEvalOptions,
    chosen: dict[str, Any],
    *,
    plot: bool = True,
) -> Space:
    """Fit one method on the training split; ``chosen`` carries choices across seeds.

    ``plot`` False writes no training curves (a refit on a carve-out).
    """
    from crossfeed.train import clipart_methods as cm
    from crossfeed.train.heads_trainer import plot_history
    from crossfeed.train.train_cmd import choose_topics, train_space

    tr = split.train
    if method == "lsq":
        return cm.fit_lsq_space(tr.image, tr.text)
    if method == "ridge":
        return cm.fit_ridge_space(tr.image, tr.text, y, tr.post_ids, seed=seed)
    if method == "cca":
        return cm.fit_cca_space(tr.image, tr.text, y, tr.post_ids, seed=seed)
    space_kind = "tags" if method == "tags" else "embedding"
    objectives = opts.tag_objectives if method == "tags" else opts.embedding_objectives
    plot_path = opts.out_dir / f"curves_{method}.png" if plot and seed == opts.seeds[0] else None
    trained = None
    topics = 0.0
    if method == "tags":
        topics = opts.topics if opts.topics is not None else chosen.get("topics", -1.0)
        if topics < 0:  # first seed: choose the topic threshold on its validation carve-out
            topics, scores, trained = choose_topics(
                tr,
                vocab,
                objectives=objectives,
                seed=seed,
                epochs=opts.epochs,
                progress=opts.progress,
            )
            chosen["topics"], chosen["topic_validation_map"] = topics, scores
            if plot_path is not None:
                title = f"tag space, {vocab.n_topics} topics (threshold {topics})"
                plot_history(trained.history, plot_path, title=title)
    if trained is None:
        # The embedding heads over-fit within ~10 epochs here; 30 with patience 5 bounds the run.
        overrides = {"epochs": 30, "patience": 5} if method == "embedding" else None
        if overrides and opts.epochs is not None:
            overrides["epochs"] = opts.epochs
        trained = train_space(
            tr,
            vocab,
            space=space_kind,
            objectives=objectives,
            seed=seed,
            epochs=opts.epochs,
            progress=opts.progress,
            plot_path=plot_path,
            topics=topics,
            overrides=overrides,
        )
    space = cm.Space(
        name=method,
        embed_image=lambda x: _project(trained.heads["image"], x),
        embed_text=lambda x: _project(trained.heads["text"], x),
        info=dict(trained.summary),
        model=trained,
    )
    if method == "tags":
        space.image_posterior = lambda x: _posterior(trained.heads["image"], x)[:, : len(vocab)]
        space.info["vocab_tags"] = list(vocab.tags)
        space.info["topic_validation_map"] = chosen.get("topic_validation_map")
    return space


def _choose_stream_min_score(
    method: str,
    split: ClipartSplit,
    seed: int,
    opts: ClipartEvalOptions,
    chosen: dict[str, Any],
    settings: Settings,
) -> dict[str, Any]:
    """The stream step's ``min_score`` for ``method``, chosen inside the training split.

    The method is refitted on the fit part of a validation carve-out (whole
    source pictures, :func:`~.clipart_data.validation_split`, with its own tag
    vocabulary), whose posts are then the neighbour gallery for the
    validation media; the test split is not used. Choices already made on
    the whole training split (the topic threshold) are kept.
    """
    from crossfeed.encoders.vocab import TagVocab
    from crossfeed.train import clipart_report as rep
    from crossfeed.train.clipart_data import validation_split

    val = validation_split(split, STREAM_VALIDATION_FRACTION, opts.split_seed)
    vocab = TagVocab().fit(val.train.tags)
    y = vocab.transform(val.train.tags)
    space = fit_space(method, val, vocab, y, seed, opts, dict(chosen), plot=False)
    stream = settings.stream
    suggested = rep.stream_suggestions(
        space, val, neighbours=stream.suggest_neighbours, top_k=stream.suggest_top_k
    )
    truth = [val.true_tags(pid) for pid in val.gallery.post_ids]
    best, sweep = rep.choose_min_score(suggested, truth)
    log.info("%s: stream min_score %.2f (validation F0.5 %.4f)", method, best, sweep[best]["f0.5"])
    return {
        "min_score": best,
        "seed": seed,
        "fraction": STREAM_VALIDATION_FRACTION,
        "fit_pairs": len(val.train),
        "validation_media": len(val.gallery),
        "sweep": {f"{t:g}": scores for t, scores in sweep.items()},
    }


def _project(head: Any, x: np.ndarray) -> np.ndarray:
    import torch

    from crossfeed.encoders.base import l2_normalize

    with torch.inference_mode():
        return l2_normalize(
            head.eval()(torch.as_tensor(np.asarray(x), dtype=torch.float32)).numpy()
        )


def _posterior(head: Any, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return (
            head.eval().net.posterior(torch.as_tensor(np.asarray(x), dtype=torch.float32)).numpy()
        )


def run_clipart_eval(
    opts: ClipartEvalOptions, settings: Settings, embedder: SharedSpaceEmbedder | None = None
) -> dict[str, Any]:
    """Run the whole evaluation; returns the JSON-able report (also written to ``out_dir``)."""
    from crossfeed.encoders.model import load_embedder
    from crossfeed.encoders.vocab import TagVocab
    from crossfeed.train import clipart_report as rep
    from crossfeed.train.clipart_data import ensure_corpus, load_split
    from crossfeed.train.clipart_output import save_winner, write_contact_sheet
    from crossfeed.train.train_data import text_features_cached

    unknown = sorted(set(opts.methods) - set(METHODS))
    if unknown or not opts.methods or not opts.seeds:
        raise InvalidInputError(f"methods must be some of {METHODS}, and seeds non-empty")
    started = time.monotonic()
    out = opts.out_dir
    out.mkdir(parents=True, exist_ok=True)
    embedder = embedder or load_embedder(settings)
    # Resolving the device also sets torch's CPU threads (training runs even when
    # every feature is cached and no tower is ever loaded).
    getattr(embedder, "device", None)
    posts_path = ensure_corpus(opts.corpus, out, progress=opts.progress)
    split = load_split(
        posts_path,
        embedder,
        extra_media_roots=settings.stream.media_roots,
        cache_dir=out / "cache",
        test_fraction=opts.test_fraction,
        split_seed=opts.split_seed,
        progress=opts.progress,
    )
    vocab = TagVocab().fit(split.train.tags)
    y = vocab.transform(split.train.tags)
    topic_text = text_features_cached(embedder, split.topic_words, out / "cache" / "topics.npz")
    features_s = time.monotonic() - started

    report: dict[str, Any] = {
        "corpus": str(posts_path),
        "split": {
            "test_fraction": opts.test_fraction,
            "seed": opts.split_seed,
            "train_pairs": len(split.train),
            "test_media": len(split.gallery),
            "test_queries": len(split.queries),
            "reposts_dropped_from_test": split.n_reposts_dropped,
            "categories": len(split.categories),
        },
        "vocab": {"tags": len(vocab), "train_posts": vocab.n_docs, "top": vocab.tags[:20]},
        "seeds": list(opts.seeds),
        "methods": {},
        "timing_s": {"features": round(features_s, 1)},
    }
    first: dict[str, Space] = {}
    topic_aps: dict[str, dict[str, float]] = {}
    chosen: dict[str, Any] = {}
    stream_choice: dict[str, dict[str, Any]] = {}
    for method in opts.methods:
        t0 = time.monotonic()
        runs: list[dict[str, float]] = []
        for seed in opts.seeds if method in TRAINED else opts.seeds[:1]:
            space = fit_space(method, split, vocab, y, seed, opts, chosen)
            metrics = rep.retrieval_metrics(space, split)
            aps = rep.topic_word_aps(space, split, topic_text)
            metrics["topic_map"] = float(np.mean(list(aps.values())))
            metrics |= rep.suggestion_precision(space, split, frozenset(vocab.tags))
            if method not in stream_choice:  # once per method, with its first seed
                stream_choice[method] = _choose_stream_min_score(
                    method, split, seed, opts, chosen, settings
                )
            suggested = rep.stream_suggestions(
                space,
                split,
                neighbours=settings.stream.suggest_neighbours,
                top_k=settings.stream.suggest_top_k,
            )
            truth = [split.true_tags(pid) for pid in split.gallery.post_ids]
            metrics |= rep.stream_metrics(suggested, truth, stream_choice[method]["min_score"])
            runs.append(metrics)
            if method not in first:
                first[method], topic_aps[method] = space, aps
            log.info("%s seed %d: t2i mAP %.4f", method, seed, metrics["t2i_map"])
        info = {k: v for k, v in first[method].info.items() if k != "vocab_tags"}
        report["methods"][method] = {
            "summary": rep.aggregate(runs),
            "runs": runs,
            "info": info,
            "stream_validation": stream_choice[method],
        }
        report["timing_s"][method] = round(time.monotonic() - t0, 1)
    report["topic_word_ap"] = topic_aps
    report["target"] = _target(report)
    summaries = {m: r["summary"] for m, r in report["methods"].items()}
    report["table"] = rep.markdown_table(summaries)
    report["topic_table"] = rep.topic_table(topic_aps, split.categories)
    report["stream_table"] = rep.markdown_table(summaries, rep.STREAM_COLUMNS)
    files: dict[str, str] = {}
    winner = _winner(report)
    if winner is not None and opts.sheet:
        files["contact_sheet"] = str(
            write_contact_sheet(
                out / "contact_sheet.png", first[winner], split, topic_text, embedder
            )
        )
    if winner is not None and opts.save:
        report["saved_version"] = save_winner(
            first[winner], vocab, split, report, settings, embedder
        )
    files |= {p.stem: str(p) for p in sorted(out.glob("curves_*.png"))}
    report["files"] = files
    report["timing_s"]["total"] = round(time.monotonic() - started, 1)
    (out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    tables = (report["table"], report["topic_table"], report["stream_table"])
    (out / "results.md").write_text("\n\n".join(tables) + "\n")
    return report


def _target(report: dict[str, Any]) -> dict[str, Any]:
    methods = report["methods"]
    base = {m: methods[m]["summary"]["t2i_map"]["mean"] for m in BASELINES if m in methods}
    if not base or "tags" not in methods:
        return {}
    best = max(base, key=lambda m: base[m])
    trained = methods["tags"]["summary"]["t2i_map"]
    gain = trained["mean"] / base[best] - 1.0
    return {
        "best_baseline": best,
        "baseline_t2i_map": base[best],
        "trained_t2i_map": trained["mean"],
        "trained_t2i_map_sd": trained["sd"],
        "gain": gain,
        "required_gain": TARGET_GAIN,
        "met": gain >= TARGET_GAIN,
    }


def _winner(report: dict[str, Any]) -> str | None:
    """The saveable method with the best mean text->image mAP."""
    saveable = [m for m in ("tags", "ridge", "lsq", "cca", "embedding") if m in report["methods"]]
    if not saveable:
        return None
    return max(saveable, key=lambda m: report["methods"][m]["summary"]["t2i_map"]["mean"])


# ---------------------------------------------------------------------- command


def _int_list(value: str) -> tuple[int, ...]:
    try:
        items = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {value!r}"
        ) from exc
    if not items:
        raise argparse.ArgumentTypeError("give at least one value")
    return items


def add_clipart_eval(eval_sub: argparse._SubParsersAction) -> None:
    """Register ``clipart`` under the ``eval`` command's sub-parsers."""
    p = eval_sub.add_parser(
        "clipart", help="retrieval on the clipart corpus: trained space vs linear baselines"
    )
    p.add_argument("--corpus", type=Path, default=None, help="corpus dir (default: build one)")
    p.add_argument("--out", type=Path, default=None, help="output dir (<state>/eval/clipart)")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--seeds", type=_int_list, default=(0, 1, 2), help="seeds of trained methods")
    p.add_argument("--methods", default=",".join(METHODS), help=f"some of {', '.join(METHODS)}")
    p.add_argument("--objective", default="bce", help="objectives of the tag space")
    p.add_argument("--weights", default=None, help="their weights (comma list)")
    p.add_argument("--epochs", type=int, default=None, help="max epochs of trained heads")
    p.add_argument("--topics", default="auto", help="topic threshold (0 = none) or 'auto'")
    p.add_argument(
        "--save",
        action="store_true",
        help="save the winning head as a new model version (workers load the newest; its "
        "dimension may differ from the running collection's: back-fill it with crossfeed reindex)",
    )
    p.add_argument("--no-sheet", action="store_true", help="skip the contact sheet")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_clipart)


def _cmd_clipart(args: argparse.Namespace) -> int:
    from crossfeed.core.settings import Settings
    from crossfeed.corpus.io import check_fraction
    from crossfeed.train.train_cmd import parse_objectives, parse_topics

    settings = Settings()
    check_fraction("test fraction", args.test_fraction, upper=0.9)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if args.epochs is not None and args.epochs < 1:
        raise InvalidInputError("--epochs must be >= 1")
    opts = ClipartEvalOptions(
        out_dir=args.out or settings.state.state_dir / "eval" / "clipart",
        corpus=args.corpus,
        test_fraction=args.test_fraction,
        split_seed=args.split_seed,
        seeds=args.seeds,
        methods=methods,
        tag_objectives=parse_objectives(args.objective, args.weights),
        epochs=args.epochs,
        topics=parse_topics(args.topics),
        save=args.save,
        progress=not args.no_progress and sys.stderr.isatty(),
        sheet=not args.no_sheet,
    )
    report = run_clipart_eval(opts, settings)
    if args.json:
        tables = ("table", "topic_table", "stream_table")
        print(json.dumps({k: v for k, v in report.items() if k not in tables}))
        return 0
    split = report["split"]
    print(
        f"clipart: {split['train_pairs']} training pairs, {split['test_queries']} test queries, "
        f"{split['test_media']} test media, {split['categories']} categories, "
        f"{report['vocab']['tags']} tags; seeds {report['seeds']}\n"
    )
    print(report["table"])
    print("\nTopic-word queries (AP per category):\n")
    print(report["topic_table"])
    print(
        "\nStream tag suggestions for test media at the min_score chosen on a validation "
        "carve-out of train, and at 0 (plain top-k):\n"
    )
    print(report["stream_table"])
    target = report.get("target") or {}
    if target:
        verdict = "met" if target["met"] else "NOT met"
        print(
            f"\ntrained tag space t->i mAP {target['trained_t2i_map']:.3f} vs best baseline "
            f"{target['best_baseline']} {target['baseline_t2i_map']:.3f}: "
            f"{target['gain']:+.1%} (target +{target['required_gain']:.0%}: {verdict})"
        )
    if report.get("saved_version"):
        print(f"saved head version {report['saved_version']} to {settings.models_dir}")
    for name, path in report["files"].items():
        print(f"{name}: {path}")
    return 0
