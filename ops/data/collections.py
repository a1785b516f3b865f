"""``crossfeed collections``: the Milvus collections of this deployment, and dropping old ones.

Each head version is served from its own collection (``<CROSSFEED_COLLECTION>`` or
``<CROSSFEED_COLLECTION>__<version>``, see ``crossfeed reindex``), so after a switch
an operator wants to see which collections exist, their dimension, size and model
versions, which one the current settings serve, and to drop the ones nothing reads.
Only collections under the configured name are listed or dropped; the one the
current settings serve is never dropped.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from crossfeed.core.settings import Settings
from crossfeed.indexer.collections import (
    drop_collection,
    list_collections,
)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "collections",
        help="list this deployment's Milvus collections (one per head version); drop old ones",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--drop", metavar="NAME", default=None, help="drop this (old) collection")
    p.add_argument("--yes", action="store_true", help="confirm --drop")
    p.set_defaults(func=_cmd_collections)


def _cmd_collections(args: argparse.Namespace) -> int:
    settings = Settings().milvus
    if args.drop is not None:
        if not args.yes:
            print(f"dropping {args.drop} deletes its vectors: add --yes", file=sys.stderr)
            return 2
        drop_collection(settings, args.drop)
        print(f"dropped {args.drop}")
        return 0
    infos = list_collections(settings)
    if args.json:
        listed = [asdict(i) for i in infos]
        print(json.dumps({"serving": settings.collection, "collections": listed}))
        return 0
    print(f"{'':2}{'collection':48} {'dim':>5} {'rows':>9}  versions")
    for i in infos:
        versions = ", ".join(i.versions) if i.loaded else "(not loaded)"
        print(f"{'*' if i.serving else '':2}{i.name:48} {i.dim:>5} {i.rows:>9}  {versions}")
    if not any(i.serving for i in infos):
        print(f"(the serving collection {settings.collection} does not exist yet)")
    return 0
