"""The stored row layout, its size limits, and the checks every index applies on write.

Milvus limits VARCHAR fields in UTF-8 *bytes*, so every free-text field is cut on a
character boundary to fit; identifiers are never cut (a cut primary key would merge
distinct rows), they are rejected instead. :class:`~crossfeed.indexer.memory.InMemoryIndex`
applies the same preparation so unit tests see exactly what Milvus would store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from crossfeed.indexer.base import IndexRow
from crossfeed.indexer.exceptions import InvalidRowError

MODALITIES: frozenset[str] = frozenset({"text", "image", "video"})

# VARCHAR sizes in UTF-8 bytes. Ids: a post id is at most 200 characters (4 bytes
# each at worst) plus ":<modality>:<item>". Text is a display copy (the full text
# stays on the topics), 8 KiB keeps the collection's memory bounded.
ID_MAX_BYTES = 1024
MODALITY_MAX_BYTES = 16
AUTHOR_MAX_BYTES = 1024
LANG_MAX_BYTES = 64
MODEL_VERSION_MAX_BYTES = 128
MEDIA_REF_MAX_BYTES = 2048
TEXT_MAX_BYTES = 8192
TAG_MAX_BYTES = 256
SOURCE_MAX_BYTES = 512  # the wire schema allows 100 characters
MAX_TAGS = 64  # matches the wire schema's limit
MAX_SUGGESTED_TAGS = 16  # matches the wire schema's limit for machine-proposed tags

# Every scalar field, in schema order (the vector is "vector").
SCALAR_FIELDS: tuple[str, ...] = (
    "row_id",
    "post_id",
    "item",
    "modality",
    "created_at",
    "author",
    "tags",
    "lang",
    "model_version",
    "media_ref",
    "text",
    "suggested_tags",
    "moment",
    "start_ms",
    "end_ms",
    "source",
)
VECTOR_FIELD = "vector"
# Fields added after the first release: a collection created before them still
# works (without them) instead of refusing to start; everything else is required.
OPTIONAL_FIELDS: frozenset[str] = frozenset(
    {"suggested_tags", "moment", "start_ms", "end_ms", "source"}
)
MOMENT_FIELDS: frozenset[str] = frozenset({"moment", "start_ms", "end_ms"})
# Stored for "not a moment" (Milvus 2.3 scalar fields cannot be null).
NO_MOMENT = -1


def truncate_utf8(value: str, max_bytes: int) -> str:
    """Longest prefix of ``value`` whose UTF-8 encoding fits in ``max_bytes``.

    Cutting the encoded bytes and decoding with ``errors="ignore"`` drops a partial
    trailing character instead of producing invalid UTF-8 (which Milvus rejects).
    """
    encoded = value.encode("utf-8", errors="replace")  # a lone surrogate becomes "?"
    if len(encoded) <= max_bytes:
        return encoded.decode("utf-8")
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


def _require_id(name: str, value: str) -> str:
    if not value:
        raise InvalidRowError(f"{name} is empty")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidRowError(f"{name} is not valid UTF-8 text") from exc
    if size > ID_MAX_BYTES:
        raise InvalidRowError(f"{name} is {size} bytes, the limit is {ID_MAX_BYTES}")
    return value


def check_vector(vector: Sequence[float], dim: int, what: str = "vector") -> list[float]:
    """The vector as a list of finite float32 values of length ``dim``, or InvalidRowError."""
    try:
        array = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidRowError(f"{what} is not a sequence of numbers") from exc
    if array.ndim != 1 or array.shape[0] != dim:
        raise InvalidRowError(f"{what} has shape {array.shape}, the index has {dim} dimensions")
    if not np.isfinite(array).all():
        raise InvalidRowError(f"{what} contains NaN or infinity")
    values: list[float] = array.tolist()
    return values


def prepare_row(row: IndexRow, dim: int) -> IndexRow:
    """Validate ``row`` and cut its free-text fields to the stored sizes.

    Raises :class:`InvalidRowError` (not retriable) for what cannot be stored.
    """
    _require_id("row_id", row.row_id)
    _require_id("post_id", row.post_id)
    if row.modality not in MODALITIES:
        raise InvalidRowError(f"modality {row.modality!r} is not one of {sorted(MODALITIES)}")
    if row.item < 0:
        raise InvalidRowError(f"item {row.item} is negative")
    if len(row.tags) > MAX_TAGS:
        raise InvalidRowError(f"{len(row.tags)} tags, the limit is {MAX_TAGS}")
    tags = [truncate_utf8(t, TAG_MAX_BYTES) for t in row.tags]
    if len(row.suggested_tags) > MAX_SUGGESTED_TAGS:
        raise InvalidRowError(
            f"{len(row.suggested_tags)} suggested tags, the limit is {MAX_SUGGESTED_TAGS}"
        )
    suggested = [truncate_utf8(t, TAG_MAX_BYTES) for t in row.suggested_tags]
    _check_moment(row)
    return replace(
        row,
        vector=check_vector(row.vector, dim, f"row {row.row_id!r}"),
        created_at_ms=int(row.created_at_ms),
        author=truncate_utf8(row.author or "", AUTHOR_MAX_BYTES),
        text=truncate_utf8(row.text or "", TEXT_MAX_BYTES),
        tags=tags,
        lang=truncate_utf8(row.lang or "", LANG_MAX_BYTES),
        model_version=truncate_utf8(row.model_version or "", MODEL_VERSION_MAX_BYTES),
        media_ref=truncate_utf8(row.media_ref or "", MEDIA_REF_MAX_BYTES),
        suggested_tags=suggested,
        source=truncate_utf8(row.source or "", SOURCE_MAX_BYTES),
    )


def _check_moment(row: IndexRow) -> None:
    span = (row.moment, row.start_ms, row.end_ms)
    if all(v is None for v in span):
        return
    if any(v is None for v in span):
        raise InvalidRowError(f"row {row.row_id!r}: a moment needs moment, start_ms and end_ms")
    assert row.moment is not None and row.start_ms is not None and row.end_ms is not None
    if row.modality != "video":
        raise InvalidRowError(f"row {row.row_id!r}: only videos have moments")
    if row.moment < 0 or row.start_ms < 0 or row.end_ms < row.start_ms:
        raise InvalidRowError(f"row {row.row_id!r}: invalid moment span {span}")


def _stored(value: int | None) -> int:
    return NO_MOMENT if value is None else int(value)


def _loaded(value: object) -> int | None:
    number = int(value) if value is not None else NO_MOMENT  # type: ignore[call-overload]
    return None if number < 0 else number


def row_to_entity(row: IndexRow, absent: frozenset[str] = frozenset()) -> dict[str, object]:
    """A prepared row as the dict Milvus stores, without the optional fields in ``absent``
    (those an older collection lacks)."""
    entity: dict[str, object] = {
        "row_id": row.row_id,
        "post_id": row.post_id,
        "item": int(row.item),
        "modality": row.modality,
        VECTOR_FIELD: list(row.vector),
        "created_at": int(row.created_at_ms),
        "author": row.author,
        "tags": list(row.tags),
        "lang": row.lang,
        "model_version": row.model_version,
        "media_ref": row.media_ref,
        "text": row.text,
        "suggested_tags": list(row.suggested_tags),
        "moment": _stored(row.moment),
        "start_ms": _stored(row.start_ms),
        "end_ms": _stored(row.end_ms),
        "source": row.source,
    }
    for name in absent & OPTIONAL_FIELDS:
        entity.pop(name, None)
    return entity


def entity_to_row(entity: dict[str, object]) -> IndexRow:
    """A Milvus entity (search hit or query row) back as an :class:`IndexRow`."""
    vector = entity.get(VECTOR_FIELD) or []
    return IndexRow(
        row_id=str(entity["row_id"]),
        post_id=str(entity["post_id"]),
        item=int(entity["item"]),  # type: ignore[call-overload]
        modality=str(entity["modality"]),
        vector=[float(x) for x in vector],  # type: ignore[attr-defined]
        created_at_ms=int(entity["created_at"]),  # type: ignore[call-overload]
        author=str(entity.get("author") or ""),
        text=str(entity.get("text") or ""),
        tags=tuple(str(t) for t in (entity.get("tags") or [])),  # type: ignore[attr-defined]
        lang=str(entity.get("lang") or ""),
        model_version=str(entity.get("model_version") or ""),
        media_ref=str(entity.get("media_ref") or ""),
        suggested_tags=tuple(
            str(t)
            for t in (entity.get("suggested_tags") or [])  # type: ignore[attr-defined]
        ),
        moment=_loaded(entity.get("moment")),
        start_ms=_loaded(entity.get("start_ms")),
        end_ms=_loaded(entity.get("end_ms")),
        source=str(entity.get("source") or ""),
    )
