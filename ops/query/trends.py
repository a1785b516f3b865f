"""``crossfeed trends``: what bursts now, as a table with sparklines, through the client.

::

    crossfeed trends                         # hashtags and clusters, highest score first
    crossfeed trends --kind cluster --limit 5
    crossfeed trends h:sunset --json         # one trend
    crossfeed search "fire" --trend h:wildfire   # search inside a trend

The API's address is ``--url``, else ``CROSSFEED_API_URL``; ``CROSSFEED_API_KEY`` is sent
when set (scope ``search``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from crossfeed.api.trend_models import MAX_TREND_LIMIT, Trend
from crossfeed.client import Client
from crossfeed.exceptions import CrossfeedError
from crossfeed.ops.query.common import console_for_output, explain

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

BARS = "▁▂▃▄▅▆▇█"


def sparkline(series: Sequence[float]) -> str:
    """``series`` as unicode bars scaled to its own maximum ("" for no data)."""
    values = [max(0.0, float(x)) for x in series]
    if not values:
        return ""
    top = max(values)
    if top <= 0:
        return BARS[0] * len(values)
    return "".join(BARS[min(len(BARS) - 1, int(v / top * (len(BARS) - 1) + 0.5))] for v in values)


def _limit(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_TREND_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_TREND_LIMIT}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def add_trends_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "trends",
        help="what bursts now: hashtags and clusters (a table with sparklines, or --json)",
        description="Current trends, highest burst score first; with an ID, one trend. "
        "Search inside one with `crossfeed search TEXT --trend ID`.",
    )
    p.add_argument("trend_id", nargs="?", metavar="ID", help="show this trend only")
    p.add_argument("--kind", choices=("hashtag", "cluster", "all"), default="all")
    p.add_argument("--limit", type=_limit, default=20, help="at most N trends (default 20)")
    p.add_argument("--window", type=_positive, default=None, help="sparkline: last N windows")
    p.add_argument("--url", default=None, help="API address (default CROSSFEED_API_URL)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per request")
    p.add_argument("--json", action="store_true", help="the API's JSON instead of a table")
    p.set_defaults(func=_cmd_trends)


def trends_table(trends: Sequence[Trend]) -> Table:
    from rich.markup import escape
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False, expand=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("trend", overflow="fold", max_width=40)
    table.add_column("kind")
    table.add_column("score", justify="right")
    table.add_column("rate vs baseline", justify="right")
    table.add_column("windows")
    table.add_column("since")
    table.add_column("id", overflow="fold", style="dim", max_width=30)
    for n, t in enumerate(trends, start=1):
        label = f"#{t.label.replace(' ', '_')}" if t.kind == "hashtag" else t.label
        table.add_row(
            str(n),
            escape(label),  # labels come from posts: printed, never obeyed as markup
            t.kind,
            f"{t.score:.2f}",
            f"{t.rate:g} vs {t.baseline:.1f}",
            sparkline(t.series),
            t.first_detected.strftime("%m-%d %H:%M"),
            escape(t.id),
        )
    return table


def print_trends(console: Console, trends: Sequence[Trend], window_s: float) -> None:
    if not trends:
        console.print("no trends right now")
        return
    console.print(trends_table(trends))
    every = f" · windows of {window_s:g} s" if window_s else ""
    console.print(f"[dim]{len(trends)} trends{every}[/dim]", highlight=False)


def _cmd_trends(args: argparse.Namespace) -> int:
    with Client(args.url, timeout=args.timeout) as client:
        try:
            if args.trend_id:
                one = client.trend(args.trend_id, window=args.window)
            else:
                page = client.trends(kind=args.kind, limit=args.limit, window=args.window)
        except CrossfeedError as exc:
            raise explain(exc, client.url) from exc
    console = console_for_output()
    if args.trend_id:
        if args.json:
            print(one.model_dump_json(indent=1))
            return 0
        print_trends(console, [one], one.window_s)
        for s in one.samples:
            console.print(f"  [dim]{s.id}[/dim] {s.text[:100]}", highlight=False, markup=False)
        return 0
    if args.json:
        print(page.model_dump_json(indent=1))
        return 0
    print_trends(console, page.trends, page.window_s)
    return 0
