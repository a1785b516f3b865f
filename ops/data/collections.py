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
from dataclasses import asdict, dataclass
from typing import Any

from crossfeed.core.settings import MilvusSettings, Settings
from crossfeed.ops.exceptions import OpsError

# Distinct model versions are read from this many rows (a collection normally holds one).
_VERSION_SAMPLE = 1000


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    dim: int
    rows: int  # Milvus' row statistics: may lag the latest upserts by a few seconds
    versions: list[str]  # model versions seen in a sample of rows; [] when not loaded
    loaded: bool
    serving: bool  # the collection the current settings point the API and workers at


def _client(settings: MilvusSettings) -> Any:
    from pymilvus import MilvusClient

    token = settings.token.get_secret_value() if settings.token else ""
    try:
        return MilvusClient(uri=settings.uri, token=token, timeout=10.0, dedicated=True)
    except Exception as exc:
        raise OpsError(f"cannot reach Milvus at {settings.uri}: {exc}", retriable=True) from exc


def ours(name: str, base: str) -> bool:
    """Whether ``name`` is ``base`` or one of its per-version collections."""
    return name == base or name.startswith(base + "__")


def list_collections(settings: MilvusSettings) -> list[CollectionInfo]:
    client = _client(settings)
    try:
        out = []
        for name in sorted(n for n in client.list_collections() if ours(n, settings.collection)):
            fields = client.describe_collection(name).get("fields", [])
            dim = next((int(f["params"]["dim"]) for f in fields if f["name"] == "vector"), 0)
            rows = int(client.get_collection_stats(name).get("row_count", 0))
            state = str(client.get_load_state(name).get("state", ""))
            loaded = state.endswith("Loaded") and "NotLoad" not in state
            versions: list[str] = []
            if loaded:
                sample = client.query(
                    name,
                    filter="",
                    output_fields=["model_version"],
                    limit=_VERSION_SAMPLE,
                    consistency_level="Strong",  # an admin view: include the latest upserts
                )
                versions = sorted({str(r["model_version"]) for r in sample})
            serving = name == settings.collection
            out.append(CollectionInfo(name, dim, rows, versions, loaded, serving))
        return out
    finally:
        client.close()


def drop_collection(settings: MilvusSettings, name: str) -> None:
    """Drop ``name``: one of ours, never the one the settings serve."""
    if not ours(name, settings.collection):
        raise OpsError(f"{name!r} is not a collection of {settings.collection!r}; not dropping it")
    if name == settings.collection:
        raise OpsError(f"{name!r} is the collection the current settings serve; not dropping it")
    client = _client(settings)
    try:
        if not client.has_collection(name):
            raise OpsError(f"no collection {name!r}")
        client.drop_collection(name)
    finally:
        client.close()


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
