"""This deployment's Milvus collections: their names per head version, listing, dropping.

Each head version is served from its own collection, ``<CROSSFEED_COLLECTION>`` or
``<CROSSFEED_COLLECTION>__<slug(version)>`` (vectors of two versions live in two
spaces, often of two dimensions). Only collections under the configured name are
listed or dropped; the one the current settings serve is never dropped.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from crossfeed.core.settings import MilvusSettings
from crossfeed.indexer.base import IndexRow
from crossfeed.indexer.client import milvus_client
from crossfeed.indexer.exceptions import CollectionRefusedError, InvalidCollectionNameError

MAX_COLLECTION_CHARS = 255
_HASH_CHARS = 8
_COLLECTION_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_HASH_CHARS]


def slug(version: str, max_chars: int = 100) -> str:
    """``version`` as a Milvus-safe name part: letters, digits, ``_``; not starting
    with a digit; at most ``max_chars``. Deterministic; when anything had to change,
    a hash of the original is appended, so ``a-b``, ``a.b`` and ``a_b`` stay apart."""
    if max_chars < _HASH_CHARS + 2:
        raise ValueError(f"max_chars must be >= {_HASH_CHARS + 2}")
    out = re.sub(r"[^A-Za-z0-9_]", "_", version)
    if not out or out[0].isdigit():
        out = "v" + out
    if out == version and len(out) <= max_chars:
        return out
    return f"{out[: max_chars - _HASH_CHARS - 1]}_{_short_hash(version)}"


def default_collection(base: str, version: str) -> str:
    """``<base>__<slug(version)>``, cut (with a hash) to Milvus' 255 characters."""
    name = f"{base}__{slug(version)}"
    if len(name) > MAX_COLLECTION_CHARS:
        keep = MAX_COLLECTION_CHARS - _HASH_CHARS - 1
        name = f"{name[:keep]}_{_short_hash(name)}"
    return check_collection_name(name)


def check_collection_name(name: str) -> str:
    if not _COLLECTION_RE.match(name):
        raise InvalidCollectionNameError(
            f"invalid Milvus collection name {name!r}: use letters, digits and '_', "
            f"starting with a letter or '_', at most {MAX_COLLECTION_CHARS} characters"
        )
    return name


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


def ours(name: str, base: str) -> bool:
    """Whether ``name`` is ``base`` or one of its per-version collections."""
    return name == base or name.startswith(base + "__")


def list_collections(settings: MilvusSettings) -> list[CollectionInfo]:
    client = milvus_client(settings)
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
        raise CollectionRefusedError(
            f"{name!r} is not a collection of {settings.collection!r}; not dropping it"
        )
    if name == settings.collection:
        raise CollectionRefusedError(
            f"{name!r} is the collection the current settings serve; not dropping it"
        )
    client = milvus_client(settings)
    try:
        if not client.has_collection(name):
            raise CollectionRefusedError(f"no collection {name!r}")
        client.drop_collection(name)
    finally:
        client.close()


def find_post_elsewhere(settings: MilvusSettings, post_id: str) -> list[IndexRow]:
    """``post_id``'s rows in another loaded collection of this deployment (another model
    version's), newest collection name first; [] when none holds it. Blocking; a
    collection that is not loaded is skipped (loading one is an operator's decision)."""
    from crossfeed.indexer.filters import post_expression
    from crossfeed.indexer.schema import entity_to_row

    base = settings.collection.split("__", 1)[0]
    client = milvus_client(settings)
    try:
        names = sorted(
            (n for n in client.list_collections() if ours(n, base)),
            reverse=True,
        )
        for name in names:
            if name == settings.collection:
                continue
            state = str(client.get_load_state(name).get("state", ""))
            if not state.endswith("Loaded") or "NotLoad" in state:
                continue
            found = client.query(
                name, filter=post_expression(post_id), output_fields=["*"], timeout=10.0
            )
            if found:
                return sorted((entity_to_row(r) for r in found), key=lambda r: r.item)
        return []
    finally:
        client.close()
