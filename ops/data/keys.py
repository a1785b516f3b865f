"""``crossfeed keys create|list|revoke``: API keys for the query API.

The key is printed once, alone on the last line of ``create``'s output (so a script can
take ``| tail -n 1``); only its hash is stored. See :mod:`crossfeed.api.auth`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

from crossfeed.api.keys import SCOPES, KeyStore, RedisKeyStore
from crossfeed.core.settings import RedisSettings

T = TypeVar("T")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="create, list and revoke API keys")
    ksub = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    c = ksub.add_parser("create", help="create a key (printed once, on the last line)")
    c.add_argument(
        "--scope",
        action="append",
        choices=SCOPES,
        required=True,
        help="search, write or admin (admin includes the others); repeatable",
    )
    c.add_argument("--name", default="", help="who or what the key is for")
    c.set_defaults(func=_cmd_create)
    ls = ksub.add_parser("list", help="list keys (ids, names, scopes; never the keys)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_cmd_list)
    r = ksub.add_parser("revoke", help="revoke a key by id")
    r.add_argument("id")
    r.set_defaults(func=_cmd_revoke)


def _with_store(fn: Callable[[KeyStore], Awaitable[T]]) -> T:
    settings = RedisSettings()

    async def run() -> T:
        store = RedisKeyStore(settings.url.get_secret_value(), settings.key_prefix)
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _cmd_create(args: argparse.Namespace) -> int:
    record, key = _with_store(lambda s: s.create(args.scope, args.name))
    scopes = ",".join(sorted(record.scopes))
    print(f"created key {record.id} ({record.name or 'no name'}) with scopes {scopes}")
    print("it is shown only now; store it somewhere safe:")
    print(key)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    records = _with_store(lambda s: s.list())
    if args.json:
        print(json.dumps({"keys": [r.to_json() for r in records]}))
        return 0
    if not records:
        print("no keys")
    for r in records:
        scopes = ",".join(sorted(r.scopes))
        print(f"{r.id}  {scopes:<18} {r.created_at:%Y-%m-%d %H:%M}  {r.name}")
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    if not _with_store(lambda s: s.revoke(args.id)):
        print(f"no key {args.id}")
        return 1
    print(f"revoked {args.id}")
    return 0
