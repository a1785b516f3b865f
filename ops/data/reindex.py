"""``crossfeed reindex``: back-fill a head version into its own Milvus collection.

Reads every post on ``posts.clean`` (from the earliest offset, in its own
consumer group), embeds it with ``--model-version`` and upserts the vectors into
``<collection>__<version>`` (or ``--collection``). Without ``--follow`` it stops
once caught up; with it, it keeps indexing new posts until SIGINT/SIGTERM, so the
new collection stays current until the API and workers are switched over with
the two settings it prints. See :mod:`crossfeed.streams.reindex`.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

from crossfeed.core.settings import Settings


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reindex",
        help="re-embed posts.clean with a head version into its own collection",
        description=(
            "Re-embed every post on the clean topic with --model-version into its own "
            "Milvus collection, then print the settings that switch the API and workers."
        ),
    )
    p.add_argument(
        "--model-version",
        required=True,
        help='head version in the models directory ("latest" = the newest)',
    )
    p.add_argument(
        "--collection",
        default=None,
        help="target collection (default: <CROSSFEED_COLLECTION>__<version>)",
    )
    p.add_argument(
        "--group", default=None, help="consumer group (default: <app id>-reindex-<version>)"
    )
    p.add_argument(
        "--follow",
        action="store_true",
        help="keep indexing new posts until SIGINT/SIGTERM instead of stopping when caught up",
    )
    p.add_argument(
        "--idle-s",
        type=_non_negative,
        default=10.0,
        help="caught up only after this many seconds without a new post (default 10)",
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help="posts per embedding batch (default CROSSFEED_BATCH_SIZE)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_reindex)


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by the first SIGINT/SIGTERM (graceful: the current batch finishes and
    is committed); a second signal acts as usual. Handlers are restored on exit."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handle(signum: int, frame: FrameType | None) -> None:
        print("crossfeed reindex: stopping after this batch", file=sys.stderr)
        stop.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    for sig in previous:
        signal.signal(sig, handle)
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _cmd_reindex(args: argparse.Namespace) -> int:
    from crossfeed.streams.reindex import run_reindex

    settings = Settings()
    with stop_on_signals() as stop:
        report = run_reindex(
            settings,
            args.model_version,
            collection=args.collection,
            group=args.group,
            follow=args.follow,
            idle_s=args.idle_s,
            batch_size=args.batch_size,
            stop=stop,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
    state = "done"
    if report.stopped:
        state = "stopped" if args.follow else "stopped before catching up"
    print(
        f"reindex {state}: {report.posts} posts read, {report.rows_written} rows written, "
        f"{report.deadletters} dead letters, {report.duplicates_skipped} reposts skipped, "
        f"{report.seconds:.1f} s; collection {report.collection} holds "
        f"{report.collection_rows} rows (model version {report.model_version})"
    )
    print("switch the API and the workers over by restarting them with:")
    print(f"  {report.switch_env}")
    return 130 if report.stopped and not args.follow else 0
