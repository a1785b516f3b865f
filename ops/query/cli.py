"""``crossfeed search`` and ``crossfeed post``: the query API from a terminal, through the client.

::

    crossfeed search "cute cat" --source bluesky --top-k 5
    crossfeed search --image cat.png --all --limit 50
    crossfeed search --post at://did:plc:x/app.bsky.feed.post/3k --json
    crossfeed post p-000123

A readable table by default, the API's JSON with ``--json`` (with ``--all``: one result
per line). The API's address is ``--url``, else ``CROSSFEED_API_URL``, else the local
API's host and port; ``CROSSFEED_API_KEY`` is sent when set.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from crossfeed.client import Client
from crossfeed.client.exceptions import BadRequestError, ConnectionFailedError, NotFoundError
from crossfeed.exceptions import CrossfeedError


def client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=None, help="API address (default CROSSFEED_API_URL)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per request")
    p.add_argument("--json", action="store_true", help="the API's JSON instead of a table")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="search the index: a text, an image file or a post id (a table, or --json)",
        description="Nearest posts to a text, an image or an indexed post.",
    )
    p.add_argument("text", nargs="?", help="what to look for")
    p.add_argument("--image", metavar="FILE", help="search with an image file")
    p.add_argument("--post", metavar="ID", help="posts like this indexed post")
    p.add_argument("--top-k", type=int, default=10, help="results per page (default 10)")
    p.add_argument("--tag", action="append", default=[], help="any of these tags (repeatable)")
    p.add_argument("--source", action="append", default=[], help="any of these sources")
    p.add_argument("--author", action="append", default=[], help="any of these authors")
    p.add_argument("--lang", help="language code, e.g. en")
    p.add_argument("--modality", action="append", default=[], choices=("text", "image", "video"))
    p.add_argument("--since", help="ISO-8601 date/time, inclusive")
    p.add_argument("--until", help="ISO-8601 date/time, exclusive")
    p.add_argument("--cursor", help="continue from a page's next_cursor")
    p.add_argument("--all", action="store_true", help="follow every page (see --limit)")
    p.add_argument("--limit", type=int, default=None, help="with --all: at most N results")
    client_options(p)
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("post", help="show one indexed post (a readable view, or --json)")
    p.add_argument("post_id", metavar="ID")
    client_options(p)
    p.set_defaults(func=_cmd_post)

    p = sub.add_parser(
        "erase",
        help="erase a post everywhere (admin key; CROSSFEED_API_KEY)",
        description="Erase a post: its rows in every collection, cached results, thumbnails, "
        "its repost claim; it stays out of later re-indexing. Exits 0 once it is gone.",
    )
    p.add_argument("post_id", metavar="ID")
    client_options(p)
    p.set_defaults(func=_cmd_erase)


def filters_from(args: argparse.Namespace) -> dict[str, Any]:
    filters: dict[str, Any] = {}
    for name, value in (
        ("tags", args.tag),
        ("sources", args.source),
        ("authors", args.author),
        ("modalities", args.modality),
        ("lang", args.lang),
        ("since", args.since),
        ("until", args.until),
    ):
        if value:
            filters[name] = value
    return filters


def explain(exc: CrossfeedError, url: str) -> CrossfeedError:
    """The error with what a person needs to fix it."""
    if isinstance(exc, BadRequestError) and exc.details:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in d.get('loc', ())[1:]) or 'request'}: {d.get('msg')}"
            for d in exc.details
            if isinstance(d, dict)
        )
        return CrossfeedError(f"{exc.message}: {problems}")
    if isinstance(exc, ConnectionFailedError):
        return CrossfeedError(
            f"{exc.message} (is the API running, e.g. `crossfeed serve`? "
            "set --url or CROSSFEED_API_URL)"
        )
    if isinstance(exc, NotFoundError):
        return CrossfeedError(exc.message)
    return exc


def _console() -> Any:
    from rich.console import Console

    # Wide enough for the table when piped (rich assumes 80 columns without a terminal).
    return Console(width=None if sys.stdout.isatty() else 160)


def _cmd_search(args: argparse.Namespace) -> int:
    given = [x for x in (args.text, args.image, args.post) if x]
    if len(given) != 1:
        print("crossfeed search: give one of TEXT, --image FILE, --post ID", file=sys.stderr)
        return 2
    if args.limit is not None and args.limit < 1:
        print("crossfeed search: --limit must be positive", file=sys.stderr)
        return 2
    query: dict[str, Any] = {
        "image": args.image,
        "post_id": args.post,
        "filters": filters_from(args),
    }
    with Client(args.url, timeout=args.timeout) as client:
        try:
            if args.all:
                return _search_all(client, args, query)
            page = client.search(args.text, top_k=args.top_k, cursor=args.cursor, **query)
        except CrossfeedError as exc:
            raise explain(exc, client.url) from exc
    if args.json:
        print(page.model_dump_json(indent=1))
        return 0
    from crossfeed.ops.query.render import print_page

    console = _console()
    print_page(console, page)
    if page.next_cursor:
        console.print(f"[dim]more: --all, or --cursor {page.next_cursor}[/dim]", highlight=False)
    return 0


def _search_all(client: Client, args: argparse.Namespace, query: dict[str, Any]) -> int:
    from crossfeed.ops.query.render import results_table

    results = []
    for result in client.iter_search(args.text, page_size=args.top_k, limit=args.limit, **query):
        if args.json:
            print(result.model_dump_json(), flush=True)
        else:
            results.append(result)
    if not args.json:
        console = _console()
        console.print(results_table(results) if results else "no results")
        console.print(f"[dim]{len(results)} results[/dim]", highlight=False)
    return 0


def _cmd_post(args: argparse.Namespace) -> int:
    with Client(args.url, timeout=args.timeout) as client:
        try:
            post = client.get_post(args.post_id)
        except CrossfeedError as exc:
            raise explain(exc, client.url) from exc
    if args.json:
        print(post.model_dump_json(indent=1))
        return 0
    from crossfeed.ops.query.render import print_post

    print_post(_console(), post)
    return 0


def _cmd_erase(args: argparse.Namespace) -> int:
    with Client(args.url, timeout=args.timeout) as client:
        try:
            done = client.erase_post(args.post_id)
        except CrossfeedError as exc:
            raise explain(exc, client.url) from exc
    if args.json:
        print(done.model_dump_json(indent=1))
    else:
        where = ", ".join(f"{n} from {c}" for c, n in done.collections.items() if n) or "no rows"
        print(f"erased {done.post_id}: {where}")
    return 0
