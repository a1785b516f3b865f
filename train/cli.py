"""``crossfeed eval <benchmark>`` (and ``crossfeed train`` when present).

``crossfeed eval wikipedia [--method NAME[,NAME...]] [--seed N | --resplits K] [--json]``
fits on the training split only and prints a markdown table (or, with
``--json``, one JSON object). No ``--seed``: the standard split. ``--seed N``:
a random re-split of the same sizes. ``--resplits K``: the standard split plus
re-splits with seeds 0..K-1, with a mean ± sd row over the re-splits.

Other benchmarks and the ``train`` command live in their own modules and are
registered here when those modules exist (see ``_EVAL_REGISTRARS``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from crossfeed.exceptions import InvalidInputError

# (module, function) pairs that register a benchmark under ``eval`` / a top-level
# command; a module that does not exist (yet) is skipped, any other import error raises.
_EVAL_REGISTRARS: tuple[tuple[str, str], ...] = (
    ("crossfeed.train.cli", "add_wikipedia_eval"),
    ("crossfeed.train.clipart", "add_clipart_eval"),
    ("crossfeed.train.moments_eval", "add_moments_eval"),
    ("crossfeed.train.trends_cmd", "add_trends_eval"),
    ("crossfeed.train.runtime_eval", "add_runtimes_eval"),
)
_COMMAND_REGISTRARS: tuple[tuple[str, str], ...] = (
    ("crossfeed.train.train_cmd", "add_train_command"),
)
_MAX_RESPLITS = 50
_MAX_SEED = 2**32 - 1


def _registrar(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        return None


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``eval`` (with its benchmarks) and the training command if present."""
    for module, name in _COMMAND_REGISTRARS:
        register = _registrar(module, name)
        if register is not None:
            register(sub)
    ev = sub.add_parser("eval", help="cross-modal retrieval benchmarks")
    eval_sub = ev.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for module, name in _EVAL_REGISTRARS:
        register = _registrar(module, name)
        if register is not None:
            register(eval_sub)


def _seed(value: str) -> int:
    try:
        seed = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"seed must be an integer, got {value!r}") from exc
    if not 0 <= seed <= _MAX_SEED:
        raise argparse.ArgumentTypeError(f"seed must be in 0..{_MAX_SEED}")
    return seed


def _resplits(value: str) -> int:
    try:
        k = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from exc
    if not 1 <= k <= _MAX_RESPLITS:
        raise argparse.ArgumentTypeError(f"--resplits must be in 1..{_MAX_RESPLITS}")
    return k


def add_wikipedia_eval(eval_sub: argparse._SubParsersAction) -> None:
    """Register ``wikipedia`` under the ``eval`` command's sub-parsers."""
    from crossfeed.train.wikipedia import DEFAULT_METHOD, ENV_VAR

    p = eval_sub.add_parser(
        "wikipedia",
        help="Wikipedia image-text benchmark (SIFT BoW + LDA features, 10 categories)",
        description="mAP and R@k of cross-modal retrieval on the Wikipedia benchmark. "
        "All hyper-parameters are chosen inside the training split.",
    )
    p.add_argument(
        "--method",
        default=DEFAULT_METHOD,
        help=f"method or comma list (default {DEFAULT_METHOD}); kpm, linear, cca, "
        "heads-infonce, heads-supervised, heads-pairwise, heads-rank, heads-all",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument("--seed", type=_seed, default=None, help="random re-split (2173/693)")
    group.add_argument(
        "--resplits", type=_resplits, default=None, help="standard split + seeds 0..K-1"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--data", type=Path, default=None, help=f"data dir (or ${ENV_VAR})")
    p.add_argument("--plot", type=Path, default=None, help="PNG of training curves (heads-*)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_wikipedia)


def _cmd_wikipedia(args: argparse.Namespace) -> int:
    from crossfeed.train import wikipedia as wiki

    methods = [m.strip() for m in str(args.method).split(",") if m.strip()]
    unknown = [m for m in methods if m not in wiki.METHODS]
    if not methods or unknown:
        raise InvalidInputError(
            f"unknown method(s) {unknown or args.method!r}; choose from {', '.join(wiki.METHODS)}"
        )
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        raise InvalidInputError(f"--plot must name a .png file, got {args.plot}")
    base = wiki.load_wikipedia(args.data)
    if args.resplits is not None:
        splits = [base, *(wiki.resplit(base, s) for s in range(args.resplits))]
    elif args.seed is not None:
        splits = [wiki.resplit(base, args.seed)]
    else:
        splits = [base]
    progress = not args.no_progress and not args.json and sys.stderr.isatty()
    results = []
    for method in methods:
        for split in splits:
            plot = args.plot if len(methods) * len(splits) == 1 else None
            opts = wiki.MethodOptions(progress=progress, plot_path=plot)
            result = wiki.evaluate(split, method, opts)
            results.append(result)
            if progress:
                print(f"{method} {split.name}: done in {result.seconds:.1f}s", file=sys.stderr)
    if args.json:
        if len(results) == 1:
            payload: dict[str, Any] = results[0].to_json()
        else:
            payload = {"dataset": wiki.DATASET, "runs": [r.to_json() for r in results]}
        print(json.dumps(payload, ensure_ascii=False))
    else:
        print(wiki.format_markdown(results))
    return 0
