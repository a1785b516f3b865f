"""The ``crossfeed`` command line.

Each package contributes its sub-commands through an ``add_commands(sub)``
function that registers argparse sub-parsers with ``set_defaults(func=...)``;
``func(args) -> int`` runs the command. Heavy imports (torch, faust, pymilvus)
happen inside those functions, so ``crossfeed status`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from crossfeed import __version__
from crossfeed.exceptions import CrossfeedError

# Modules that register sub-commands, in help order.
_COMMAND_MODULES = (
    "crossfeed.ops.engines.control",  # up, down, status
    "crossfeed.ops.data.corpus",  # corpus
    "crossfeed.ops.data.produce",  # produce
    "crossfeed.ops.data.replay",  # replay
    "crossfeed.ops.data.ingest",  # ingest bluesky|mastodon
    "crossfeed.ops.data.reindex",  # reindex
    "crossfeed.ops.data.collections",  # collections
    "crossfeed.ops.data.keys",  # keys
    "crossfeed.ops.run.serve",  # worker, serve
    "crossfeed.ops.run.demo",  # demo
    "crossfeed.ops.query.cli",  # search, post, erase
    "crossfeed.ops.query.watch",  # watch
    "crossfeed.train.cli",  # train, eval
    "crossfeed.ops.bench.cli",  # bench
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crossfeed", description="Streaming cross-media retrieval engine."
    )
    parser.add_argument("--version", action="version", version=f"crossfeed {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # Client libraries log every connection at INFO; keep command output readable.
        for noisy in ("kafka", "aiokafka", "faust", "mode", "httpx", "pymilvus"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except CrossfeedError as exc:
        print(f"crossfeed: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
