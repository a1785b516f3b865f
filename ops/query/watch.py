"""``crossfeed watch``: a standing query from a terminal; matches print as they arrive.

::

    crossfeed watch "wildfire smoke" --min-score 0.45 --tag fire
    crossfeed watch --image smoke.png --min-score 0.6 --json
    crossfeed watch --subscription 3f2a...        # follow an existing one (kept on exit)

It subscribes through the client, prints one line per match (``--json``: the match as
one JSON line) and, on Ctrl-C or SIGTERM, deletes the subscription it made (``--keep``
leaves it, and prints its id, to resume later with ``--subscription ID --after EVENT``).
A dropped connection is resumed with ``Last-Event-ID``: no match is missed or repeated.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Iterator
from types import FrameType

from crossfeed.client import Client, SubscriptionMatch
from crossfeed.exceptions import CrossfeedError
from crossfeed.ops.query.cli import client_options, explain, filters_from


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "watch",
        help="print new posts matching a text, image or post as they are indexed",
        description="A standing query: new posts scoring at least --min-score against it "
        "are printed as they are indexed, until Ctrl-C (which deletes the subscription).",
    )
    p.add_argument("text", nargs="?", help="what to watch for")
    p.add_argument("--image", metavar="FILE", help="watch for posts like this image")
    p.add_argument("--post", metavar="ID", help="watch for posts like this indexed post")
    p.add_argument("--subscription", metavar="ID", help="follow an existing subscription")
    p.add_argument("--after", metavar="EVENT", help="with --subscription: resume after it")
    p.add_argument(
        "--min-score", type=float, default=0.5, help="cosine similarity needed (default 0.5)"
    )
    p.add_argument("--name", help="a name for the subscription")
    p.add_argument("--tag", action="append", default=[], help="any of these tags (repeatable)")
    p.add_argument("--source", action="append", default=[], help="any of these sources")
    p.add_argument("--author", action="append", default=[], help="any of these authors")
    p.add_argument("--lang", help="language code, e.g. en")
    p.add_argument("--modality", action="append", default=[], choices=("text", "image", "video"))
    p.add_argument("--count", type=int, default=None, help="stop after N matches")
    p.add_argument("--keep", action="store_true", help="keep the subscription on exit")
    client_options(p)
    p.set_defaults(func=_cmd_watch, since=None, until=None)


def _line(match: SubscriptionMatch) -> str:
    where = match.modality
    if match.moment is not None:
        where += f" {match.moment.start_s:.1f}-{match.moment.end_s:.1f}s"
    text = " ".join(match.text.split())
    tags = " ".join(f"#{t}" for t in match.tags)
    snippet = (text[:80] + "…" if len(text) > 80 else text) + (f"  {tags}" if tags else "")
    stamp = match.matched_at.strftime("%H:%M:%S")
    return f"{stamp}  {match.score:.3f}  {match.post_id}  [{where}]  {snippet}"


def _stop_on_sigterm() -> None:
    """SIGTERM (what a service manager sends) ends the watch like Ctrl-C does."""

    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, raise_interrupt)


def _cmd_watch(args: argparse.Namespace) -> int:
    given = [x for x in (args.text, args.image, args.post, args.subscription) if x]
    if len(given) != 1:
        print(
            "crossfeed watch: give one of TEXT, --image FILE, --post ID, --subscription ID",
            file=sys.stderr,
        )
        return 2
    if args.count is not None and args.count < 1:
        print("crossfeed watch: --count must be positive", file=sys.stderr)
        return 2
    if args.after and not args.subscription:
        print("crossfeed watch: --after goes with --subscription", file=sys.stderr)
        return 2
    _stop_on_sigterm()
    with Client(args.url, timeout=args.timeout) as client:
        sub_id = args.subscription
        made = False
        try:
            if sub_id is None:
                sub = client.subscribe(
                    args.text,
                    image=args.image,
                    post_id=args.post,
                    min_score=args.min_score,
                    filters=filters_from(args),
                    name=args.name,
                )
                sub_id, made = sub.id, True
                print(f"watching {sub.name!r} ({sub.id}); Ctrl-C stops", file=sys.stderr)
            _follow(client.matches(sub_id, last_event_id=args.after), args)
        except KeyboardInterrupt:
            pass
        except CrossfeedError as exc:
            raise explain(exc, client.url) from exc
        finally:
            if made and sub_id is not None:
                if args.keep:
                    print(f"kept subscription {sub_id}", file=sys.stderr)
                else:
                    try:
                        client.unsubscribe(sub_id)
                    except CrossfeedError as exc:
                        print(f"could not delete subscription {sub_id}: {exc}", file=sys.stderr)
    return 0


def _follow(matches: Iterator[SubscriptionMatch], args: argparse.Namespace) -> None:
    seen = 0
    try:
        for match in matches:
            if args.json:
                print(match.model_dump_json(), flush=True)
            else:
                print(_line(match), flush=True)
            seen += 1
            if args.count is not None and seen >= args.count:
                return
        print("the subscription was deleted", file=sys.stderr)
    finally:
        close = getattr(matches, "close", None)
        if close is not None:
            close()
