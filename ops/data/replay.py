"""``crossfeed replay FILE.jsonl --speed X``: a recorded stream, paced as it happened.

Posts are sent to ``posts.raw`` in file order, each when its ``created_at`` comes due
at ``X`` times real time (``--speed 10``: an hour of posts in six minutes), measured
from the first post; ``--max-gap S`` shortens recorded silences to at most ``S``
seconds (before the speed-up). A post dated before its predecessor goes out at once.
The file is validated first (a bad file sends nothing), a progress bar shows how far
the replay is, and SIGINT/SIGTERM stop it after flushing what was sent. For demos
and load tests.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from crossfeed.core.schema import Post
from crossfeed.core.settings import KafkaSettings
from crossfeed.exceptions import InvalidInputError
from crossfeed.ops.data.produce import _validate_file, produce

log = logging.getLogger(__name__)


def schedule(times: list[datetime], speed: float, max_gap_s: float | None) -> list[float]:
    """Seconds after the start at which each post is due."""
    if not speed > 0 or not math.isfinite(speed):
        raise InvalidInputError(f"--speed must be a positive number, got {speed}")
    due: list[float] = []
    at = 0.0
    for i, when in enumerate(times):
        if i:
            gap = max(0.0, (when - times[i - 1]).total_seconds())
            if max_gap_s is not None:
                gap = min(gap, max_gap_s)
            at += gap / speed
        due.append(at)
    return due


def paced(
    lines: list[bytes],
    due: list[float],
    stop: threading.Event,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[bytes]:
    """``lines`` at their due times; ends early when ``stop`` is set."""
    start = clock()
    for line, at in zip(lines, due, strict=True):
        wait = at - (clock() - start)
        if wait > 0 and stop.wait(wait):
            return
        if stop.is_set():
            return
        yield line


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay", help="send a recorded JSON-lines stream to posts.raw, paced by created_at"
    )
    p.add_argument("file", type=Path, help="JSON lines, one post per line")
    p.add_argument("--speed", type=float, default=1.0, help="times real time (default 1)")
    p.add_argument("--max-gap", type=float, default=None, help="cap recorded silences (s)")
    p.add_argument("--topic", default=None, help="default posts.raw (CROSSFEED_TOPIC_RAW)")
    p.add_argument("--no-create-topics", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_replay)


def _cmd_replay(args: argparse.Namespace) -> int:
    path: Path = args.file.expanduser()
    if not path.is_file():
        raise InvalidInputError(f"{path} is not a file")
    if args.max_gap is not None and args.max_gap < 0:
        raise InvalidInputError("--max-gap must not be negative")
    _validate_file(path)
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    times = [Post.model_validate_json(line).created_at for line in lines]
    due = schedule(times, args.speed, args.max_gap)
    if due:
        log.info("%s: %d posts over %.1f s", path, len(lines), due[-1])
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        settings = KafkaSettings()
        sent = produce(
            paced(lines, due, stop),
            settings,
            args.topic,
            progress=not args.no_progress and sys.stderr.isatty(),
            create_topics=not args.no_create_topics,
            total=len(lines),
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    topic = args.topic or settings.topic_raw
    state = " (stopped)" if stop.is_set() else ""
    print(f"replayed {sent} of {len(lines)} posts from {path} to {topic}{state}")
    return 0
