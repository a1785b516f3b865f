"""Structured search filters: validation, the Milvus boolean expression, the same test in Python.

Users never supply expression text. Every value is validated here and then written
into the expression as a literal: numbers via ``int()``, strings via :func:`quote`,
which escapes the two characters that can end or alter a double-quoted literal
(``"`` and ``\\``) and refuses control characters outright. Field names are
constants. So a tag like ``x"] or true or tags["`` stays one string value.

:func:`matches` gives the in-memory index the exact same semantics, so unit tests
against :class:`~crossfeed.indexer.memory.InMemoryIndex` speak for Milvus too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from crossfeed.indexer.base import IndexRow, SearchFilter
from crossfeed.indexer.exceptions import InvalidFilterError
from crossfeed.indexer.schema import (
    AUTHOR_MAX_BYTES,
    ID_MAX_BYTES,
    LANG_MAX_BYTES,
    MAX_TAGS,
    MODALITIES,
    MODEL_VERSION_MAX_BYTES,
    SOURCE_MAX_BYTES,
    TAG_MAX_BYTES,
    truncate_utf8,
)

# Bounds an exclusion list: a post-id query excludes one post; 1000 leaves room
# for callers that exclude what they already showed, without unbounded expressions.
MAX_EXCLUDED_POSTS = 1000
# Sources and authors a filter may name (any of them matches).
MAX_FILTER_VALUES = 64
# Milvus reads "-9223372036854775808" as minus 9223372036854775808, which overflows int64
# ("cannot parse expression"): the lowest bound it can parse is one more than int64's.
_INT64_MIN = -(2**63) + 1
_INT64_MAX = 2**63 - 1


def _check_text(what: str, value: object, max_bytes: int) -> str:
    if not isinstance(value, str):
        raise InvalidFilterError(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidFilterError(f"{what} is empty")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidFilterError(f"{what} contains control characters")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidFilterError(f"{what} is not valid Unicode text") from exc
    if size > max_bytes:
        raise InvalidFilterError(f"{what} is {size} bytes, the limit is {max_bytes}")
    return value


def _check_ms(what: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidFilterError(f"{what} must be an integer (epoch milliseconds)")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise InvalidFilterError(f"{what} is out of range")
    return value


def _check_values(what: str, values: object, max_bytes: int) -> tuple[str, ...]:
    """Distinct, checked values of an any-of filter, cut like the stored field."""
    if isinstance(values, str) or not isinstance(values, list | tuple):
        raise InvalidFilterError(f"{what}s must be a list of strings")
    if len(values) > MAX_FILTER_VALUES:
        raise InvalidFilterError(f"{len(values)} {what}s, the limit is {MAX_FILTER_VALUES}")
    return tuple(
        dict.fromkeys(truncate_utf8(_check_text(what, v, 4 * max_bytes), max_bytes) for v in values)
    )


def validate_filter(flt: SearchFilter) -> SearchFilter:
    """A checked copy of ``flt``, or :class:`InvalidFilterError`.

    Tags longer than the stored tag size are cut the same way stored tags are, so
    they still match; everything else that does not fit is refused.
    """
    modalities = tuple(dict.fromkeys(flt.modalities))
    for m in modalities:
        if m not in MODALITIES:
            raise InvalidFilterError(f"modality {m!r} is not one of {sorted(MODALITIES)}")
    since = _check_ms("since", flt.since_ms)
    until = _check_ms("until", flt.until_ms)
    if since is not None and until is not None and since >= until:
        raise InvalidFilterError("since must be earlier than until")
    if len(flt.tags) > MAX_TAGS:
        raise InvalidFilterError(f"{len(flt.tags)} tags, the limit is {MAX_TAGS}")
    tags = tuple(
        dict.fromkeys(
            truncate_utf8(_check_text("tag", t, 4 * TAG_MAX_BYTES), TAG_MAX_BYTES) for t in flt.tags
        )
    )
    lang = None if flt.lang is None else _check_text("lang", flt.lang, LANG_MAX_BYTES)
    sources = _check_values("source", flt.sources, SOURCE_MAX_BYTES)
    authors = _check_values("author", flt.authors, AUTHOR_MAX_BYTES)
    if len(flt.exclude_post_ids) > MAX_EXCLUDED_POSTS:
        raise InvalidFilterError(f"more than {MAX_EXCLUDED_POSTS} excluded posts")
    excluded = tuple(
        dict.fromkeys(_check_text("post id", p, ID_MAX_BYTES) for p in flt.exclude_post_ids)
    )
    only: tuple[str, ...] | None = None
    if flt.post_ids is not None:
        if isinstance(flt.post_ids, str) or not isinstance(flt.post_ids, list | tuple):
            raise InvalidFilterError("post ids must be a list of strings")
        if not flt.post_ids:
            raise InvalidFilterError("an empty post-id set matches nothing; leave it out")
        if len(flt.post_ids) > MAX_EXCLUDED_POSTS:
            raise InvalidFilterError(f"more than {MAX_EXCLUDED_POSTS} posts to search in")
        only = tuple(dict.fromkeys(_check_text("post id", p, ID_MAX_BYTES) for p in flt.post_ids))
    version = (
        None
        if flt.model_version is None
        else _check_text("model version", flt.model_version, MODEL_VERSION_MAX_BYTES)
    )
    return replace(
        flt,
        modalities=modalities,
        since_ms=since,
        until_ms=until,
        tags=tags,
        lang=lang,
        sources=sources,
        authors=authors,
        exclude_post_ids=excluded,
        post_ids=only,
        model_version=version,
    )


def quote(value: str) -> str:
    """``value`` as a double-quoted Milvus string literal.

    Backslash and double quote are escaped; control characters (which could end the
    literal at a line break in the expression lexer) are refused, not escaped.
    """
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidFilterError("string value contains control characters")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _string_list(values: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(quote(v) for v in values) + "]"


def build_expression(flt: SearchFilter) -> str:
    """The Milvus boolean expression for a filter ("" = no filter). Validates first."""
    f = validate_filter(flt)
    parts: list[str] = []
    if f.modalities:
        parts.append(f"modality in {_string_list(list(f.modalities))}")
    if f.since_ms is not None:
        parts.append(f"created_at >= {int(f.since_ms)}")
    if f.until_ms is not None:
        parts.append(f"created_at < {int(f.until_ms)}")
    if f.tags:
        parts.append(f"array_contains_any(tags, {_string_list(list(f.tags))})")
    if f.lang is not None:
        parts.append(f"lang == {quote(f.lang)}")
    if f.sources:
        parts.append(f"source in {_string_list(list(f.sources))}")
    if f.authors:
        parts.append(f"author in {_string_list(list(f.authors))}")
    if f.model_version is not None:
        parts.append(f"model_version == {quote(f.model_version)}")
    if f.exclude_post_ids:
        parts.append(f"post_id not in {_string_list(list(f.exclude_post_ids))}")
    if f.post_ids is not None:
        parts.append(f"post_id in {_string_list(list(f.post_ids))}")
    return " and ".join(f"({p})" for p in parts)


def post_expression(post_id: str) -> str:
    """Expression selecting every row of one post."""
    return f"post_id == {quote(_check_text('post id', post_id, ID_MAX_BYTES))}"


def posts_expression(post_ids: Sequence[str]) -> str:
    """Expression selecting every row of these posts (at most MAX_EXCLUDED_POSTS)."""
    if len(post_ids) > MAX_EXCLUDED_POSTS:
        raise InvalidFilterError(f"at most {MAX_EXCLUDED_POSTS} post ids at once")
    values = ", ".join(quote(_check_text("post id", p, ID_MAX_BYTES)) for p in post_ids)
    return f"post_id in [{values}]"


def matches(row: IndexRow, flt: SearchFilter) -> bool:
    """True when ``row`` passes a *validated* filter; same semantics as the expression."""
    if flt.modalities and row.modality not in flt.modalities:
        return False
    if flt.since_ms is not None and row.created_at_ms < flt.since_ms:
        return False
    if flt.until_ms is not None and row.created_at_ms >= flt.until_ms:
        return False
    if flt.tags and not set(flt.tags).intersection(row.tags):
        return False
    if flt.lang is not None and row.lang != flt.lang:
        return False
    if flt.sources and row.source not in flt.sources:
        return False
    if flt.authors and row.author not in flt.authors:
        return False
    if flt.model_version is not None and row.model_version != flt.model_version:
        return False
    if flt.post_ids is not None and row.post_id not in flt.post_ids:
        return False
    return not (flt.exclude_post_ids and row.post_id in flt.exclude_post_ids)
