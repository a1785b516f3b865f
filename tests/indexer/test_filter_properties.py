"""Property-based fuzzing of filter building (indexer/filters.py).

Any field values, of any type: validation raises only :class:`InvalidFilterError`; an
accepted filter becomes an expression whose every string value is one double-quoted
literal that decodes back to exactly the validated value, in a fixed skeleton, so no
value can change the expression's structure. tests/indexer/test_filter_grammar_integration.py
runs generated expressions against the real Milvus. Short and long (``slow``) passes: see
the ``examples`` fixture in tests/conftest.py.
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossfeed.indexer.base import SearchFilter
from crossfeed.indexer.exceptions import InvalidFilterError
from crossfeed.indexer.filters import (
    _INT64_MAX,
    _INT64_MIN,
    build_expression,
    post_expression,
    validate_filter,
)

ANY_CHAR = st.characters(codec=None, exclude_categories=())  # lone surrogates included
HOSTILE = st.sampled_from(
    [
        '"',
        "\\",
        '\\"',
        "'",
        "\\u0022",
        "\\x22",
        "\\042",
        "\\n",
        'x"] or true or tags["',
        'x") or (1 == 1',
        "x' or '1'=='1",
        '"]) or true or (["',
        " or 1==1",
        "\u2028",
        "\x85",
        "🎉",
        "é" * 300,
        "\\" * 513,
        "",
        "\x00",
        "\n",
        "\ud800",
    ]
)
LONG = st.builds(
    lambda piece, n: piece * n, st.sampled_from(['"', "\\", "é", "a", "🎉"]), st.integers(60, 1100)
)
TEXT = st.one_of(HOSTILE, st.text(ANY_CHAR, max_size=30), LONG)
ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), TEXT, st.binary(max_size=5)
)
MS = st.one_of(
    st.none(),
    st.integers(min_value=_INT64_MIN - 2, max_value=_INT64_MAX + 2),
    st.sampled_from([_INT64_MIN, _INT64_MAX, 0, -1]),
    ANY_VALUE,
)
FILTERS = st.builds(
    SearchFilter,
    modalities=st.lists(
        st.one_of(st.sampled_from(["text", "image", "video"]), TEXT), max_size=4
    ).map(tuple),
    since_ms=MS,
    until_ms=MS,
    tags=st.lists(TEXT, max_size=70).map(tuple),
    lang=st.one_of(st.none(), TEXT),
    exclude_post_ids=st.lists(TEXT, max_size=5).map(tuple),
    model_version=st.one_of(st.none(), TEXT),
)
_LITERAL = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)


def _decode(body: str) -> str:
    """Reference decoder: the builder may only escape backslash and double quote."""
    out, i = [], 0
    while i < len(body):
        if body[i] == "\\":
            assert body[i + 1] in '\\"', f"unexpected escape {body[i : i + 2]!r}"
            out.append(body[i + 1])
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def _skeleton(f: SearchFilter) -> tuple[str, list[str]]:
    """The expression expected for validated ``f``, each string literal as ``S``, and the
    string values in order (an oracle written apart from the builder)."""

    def strings(values: Any) -> str:
        return "[" + ", ".join("S" for _ in values) + "]"

    parts: list[str] = []
    values: list[str] = []
    if f.modalities:
        parts.append(f"modality in {strings(f.modalities)}")
        values += f.modalities
    if f.since_ms is not None:
        parts.append(f"created_at >= {f.since_ms}")
    if f.until_ms is not None:
        parts.append(f"created_at < {f.until_ms}")
    if f.tags:
        parts.append(f"array_contains_any(tags, {strings(f.tags)})")
        values += f.tags
    if f.lang is not None:
        parts.append("lang == S")
        values.append(f.lang)
    if f.model_version is not None:
        parts.append("model_version == S")
        values.append(f.model_version)
    if f.exclude_post_ids:
        parts.append(f"post_id not in {strings(f.exclude_post_ids)}")
        values += f.exclude_post_ids
    return " and ".join(f"({p})" for p in parts), values


def _run(examples: int, strategy: st.SearchStrategy, check) -> None:  # type: ignore[no-untyped-def]
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(strategy)
    def prop(value) -> None:  # type: ignore[no-untyped-def]
        check(value)

    prop()


def test_property_filter_values_cannot_change_the_expression(examples: int) -> None:
    def check(flt: SearchFilter) -> None:
        try:
            expr = build_expression(flt)
        except InvalidFilterError:
            return
        valid = validate_filter(flt)
        skeleton, values = _skeleton(valid)
        literals = [_decode(m.group(1)) for m in _LITERAL.finditer(expr)]
        assert _LITERAL.sub("S", expr) == skeleton
        assert literals == values
        assert all(isinstance(v, str) and v for v in values)
        expr.encode("utf-8")  # sendable: no lone surrogates got through

    _run(examples, FILTERS, check)


def test_property_post_expression_is_one_literal(examples: int) -> None:
    def check(post_id: Any) -> None:
        try:
            expr = post_expression(post_id)
        except InvalidFilterError:
            return
        assert _LITERAL.sub("S", expr) == "post_id == S"
        assert [_decode(m.group(1)) for m in _LITERAL.finditer(expr)] == [post_id]

    _run(examples, ANY_VALUE, check)
