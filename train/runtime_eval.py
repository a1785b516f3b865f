"""``crossfeed eval runtimes``: what the encoder runtime costs in retrieval quality.

The clipart corpus is featurised once per tower runtime (torch, ONNX Runtime fp32,
ONNX Runtime with the int8 text tower; features cached per runtime) and scored like
``crossfeed eval clipart`` (same split, same methods, same seeds and the same tag
space topic threshold for every runtime), text->image mAP foremost:

* ``validation``: fitted on a carve-out of the training split, scored on the rest of
  it; this is what the default runtime is chosen by (the test split stays unseen);
* ``test``: fitted on the whole training split, scored on the test split;
* ``served``: heads fitted on torch features (as on a GPU or a torch machine), the
  test media and queries embedded by the runtime: a head version trained anywhere,
  served on a CPU with ONNX Runtime.

Also the features' agreement with torch (cosine per row) and the extraction time.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crossfeed.exceptions import InvalidInputError

if TYPE_CHECKING:
    from crossfeed.core.settings import Settings
    from crossfeed.train.clipart_data import ClipartSplit

log = logging.getLogger(__name__)

# name -> (CROSSFEED_ENCODER_RUNTIME, CROSSFEED_ONNX_TEXT_QUANT)
RUNTIMES: dict[str, tuple[str, str]] = {
    "torch": ("torch", "none"),
    "onnx-fp32": ("onnx", "none"),
    "onnx-int8": ("onnx", "int8"),
    "onnx-int8-ffn-fp32": ("onnx", "int8-ffn-fp32"),
}
VALIDATION_FRACTION = 0.2
MAX_MAP_LOSS = 0.01  # the bar: at most 1 % (relative) text->image mAP lost


def _cos_rows(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    num = (a * b).sum(1)
    cos = num / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return {"mean": float(cos.mean()), "min": float(cos.min()), "p1": float(np.quantile(cos, 0.01))}


def _scores(space: Any, split: ClipartSplit) -> dict[str, float]:
    from crossfeed.train import clipart_report as rep

    m = rep.retrieval_metrics(space, split)
    return {k: m[k] for k in ("t2i_map", "i2t_map", "t2i_p@10")}


def run_runtime_eval(
    settings: Settings,
    out_dir: Path,
    *,
    corpus: Path | None = None,
    runtimes: tuple[str, ...] = tuple(RUNTIMES),
    methods: tuple[str, ...] = ("ridge", "tags"),
    seeds: tuple[int, ...] = (0,),
    topics: float | None = None,
    split_seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Featurise per runtime, fit and score every method; returns the JSON-able report."""
    from crossfeed.encoders.model import SharedSpaceEmbedder
    from crossfeed.encoders.vocab import TagVocab
    from crossfeed.train.clipart import ClipartEvalOptions, fit_space
    from crossfeed.train.clipart_data import ensure_corpus, load_split, validation_split

    if "torch" not in runtimes or set(runtimes) - set(RUNTIMES):
        raise InvalidInputError(f"runtimes must include torch and be some of {tuple(RUNTIMES)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    posts_path = ensure_corpus(corpus, out_dir, progress=progress)
    opts = ClipartEvalOptions(
        out_dir=out_dir, seeds=seeds, methods=methods, topics=topics, save=False, sheet=False
    )
    opts.progress = progress
    splits: dict[str, ClipartSplit] = {}
    report: dict[str, Any] = {"corpus": str(posts_path), "runtimes": {}, "seeds": list(seeds)}
    for name in runtimes:
        runtime, quant = RUNTIMES[name]
        enc = settings.encoder.model_copy(update={"runtime": runtime, "onnx_text_quant": quant})
        embedder = SharedSpaceEmbedder(enc, settings.models_dir)
        started = time.monotonic()
        splits[name] = load_split(
            posts_path,
            embedder,
            extra_media_roots=settings.stream.media_roots,
            cache_dir=out_dir / "cache" / name,
            split_seed=split_seed,
            progress=progress,
        )
        info = embedder.info() if embedder._text is not None else {}
        report["runtimes"][name] = {
            "features_s": round(time.monotonic() - started, 1),
            "text_runtime": info.get("text_runtime"),
            "image_runtime": info.get("image_runtime"),
            "fallbacks": info.get("runtime_fallbacks"),
            "methods": {},
        }
    ref = splits["torch"]
    chosen: dict[str, Any] = {}  # the topic threshold, chosen once (torch) and kept
    fitted_on_torch: dict[tuple[str, int], Any] = {}
    for name in runtimes:
        split = splits[name]
        if split.gallery.post_ids != ref.gallery.post_ids or split.train.post_ids != (
            ref.train.post_ids
        ):
            raise InvalidInputError(f"{name}: the featurised rows differ from torch's")
        entry = report["runtimes"][name]
        entry["agreement_with_torch"] = {
            "text": _cos_rows(split.train.text, ref.train.text),
            "image": _cos_rows(split.train.image, ref.train.image),
        }
        val = validation_split(split, VALIDATION_FRACTION, split_seed)
        val_vocab = TagVocab().fit(val.train.tags)
        vocab = TagVocab().fit(split.train.tags)
        for method in methods:
            runs: dict[str, list[dict[str, float]]] = {"validation": [], "test": [], "served": []}
            for seed in seeds:
                y_val = val_vocab.transform(val.train.tags)
                space = fit_space(method, val, val_vocab, y_val, seed, opts, chosen, plot=False)
                runs["validation"].append(_scores(space, val))
                y = vocab.transform(split.train.tags)
                space = fit_space(method, split, vocab, y, seed, opts, chosen, plot=False)
                runs["test"].append(_scores(space, split))
                if name == "torch":
                    fitted_on_torch[(method, seed)] = space
                served = replace(ref, gallery=split.gallery, queries=split.queries)
                runs["served"].append(_scores(fitted_on_torch[(method, seed)], served))
                log.info(
                    "%s %s seed %d: %s", name, method, seed, {k: v[-1] for k, v in runs.items()}
                )
            entry["methods"][method] = {
                part: {k: float(np.mean([r[k] for r in rs])) for k in rs[0]}
                for part, rs in runs.items()
            }
    report["topics"] = chosen.get("topics", topics)
    report["verdict"] = _verdict(report, methods)
    report["table"] = markdown_table(report, methods)
    (out_dir / "runtimes.json").write_text(json.dumps(report, indent=1) + "\n")
    (out_dir / "runtimes.md").write_text(report["table"] + "\n")
    return report


def _verdict(report: dict[str, Any], methods: tuple[str, ...]) -> dict[str, Any]:
    """Per runtime and method: relative t->i mAP change against torch, and within the bar?"""
    runs = report["runtimes"]
    out: dict[str, Any] = {}
    for name, entry in runs.items():
        for method in methods:
            for part in ("validation", "test", "served"):
                base = runs["torch"]["methods"][method][part]["t2i_map"]
                value = entry["methods"][method][part]["t2i_map"]
                change = value / base - 1.0 if base else 0.0
                out[f"{name}/{method}/{part}"] = {
                    "t2i_map_change": change,
                    "within_bar": change >= -MAX_MAP_LOSS,
                }
    return out


def markdown_table(report: dict[str, Any], methods: tuple[str, ...]) -> str:
    lines = [
        "| runtime | method | val t->i mAP | test t->i mAP | served t->i mAP | test i->t mAP "
        "| text cos to torch (mean / min) | features s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in report["runtimes"].items():
        agree = entry["agreement_with_torch"]["text"]
        for method in methods:
            m = entry["methods"][method]
            lines.append(
                f"| {name} | {method} | {m['validation']['t2i_map']:.4f} "
                f"| {m['test']['t2i_map']:.4f} | {m['served']['t2i_map']:.4f} "
                f"| {m['test']['i2t_map']:.4f} | {agree['mean']:.4f} / {agree['min']:.4f} "
                f"| {entry['features_s']:.0f} |"
            )
    return "\n".join(lines)


def add_runtimes_eval(eval_sub: argparse._SubParsersAction) -> None:
    """Register ``runtimes`` under the ``eval`` command's sub-parsers."""
    p = eval_sub.add_parser(
        "runtimes", help="clipart retrieval quality per encoder runtime (torch vs ONNX Runtime)"
    )
    p.add_argument("--corpus", type=Path, default=None, help="corpus dir (default: build one)")
    p.add_argument("--out", type=Path, default=None, help="output dir (<state>/eval/runtimes)")
    p.add_argument("--runtimes", default=",".join(RUNTIMES), help="some of " + ", ".join(RUNTIMES))
    p.add_argument("--methods", default="ridge,tags", help="clipart methods to fit")
    p.add_argument("--seeds", default="0", help="comma-separated seeds of trained methods")
    p.add_argument("--topics", default="auto", help="tag space topic threshold or 'auto'")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_runtimes)


def _cmd_runtimes(args: argparse.Namespace) -> int:
    from crossfeed.core.settings import Settings
    from crossfeed.train.clipart import METHODS, _int_list
    from crossfeed.train.train_cmd import parse_topics

    settings = Settings()
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if not methods or set(methods) - set(METHODS):
        raise InvalidInputError(f"--methods must be some of {METHODS}")
    report = run_runtime_eval(
        settings,
        args.out or settings.state.state_dir / "eval" / "runtimes",
        corpus=args.corpus,
        runtimes=tuple(r.strip() for r in args.runtimes.split(",") if r.strip()),
        methods=methods,
        seeds=_int_list(args.seeds),
        topics=parse_topics(args.topics),
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "table"}))
        return 0
    print(report["table"])
    for key, v in report["verdict"].items():
        if not key.startswith("torch/"):
            mark = "ok" if v["within_bar"] else "OVER the 1% bar"
            print(f"{key}: t->i mAP {v['t2i_map_change']:+.2%} vs torch ({mark})")
    return 0
