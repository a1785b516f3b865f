"""Filter validation, expression building (escaping) and the in-memory semantics."""

from __future__ import annotations

import pytest

from crossfeed.indexer.base import IndexRow, SearchFilter
from crossfeed.indexer.exceptions import InvalidFilterError
from crossfeed.indexer.filters import (
    build_expression,
    matches,
    post_expression,
    quote,
    validate_filter,
)
from crossfeed.indexer.schema import TAG_MAX_BYTES, truncate_utf8


def _unquote(literal: str) -> str:
    """Reference decoder of a double-quoted literal with \\\\ and \\" escapes."""
    assert literal[0] == literal[-1] == '"'
    out, i, body = [], 0, literal[1:-1]
    while i < len(body):
        c = body[i]
        if c == "\\":
            out.append(body[i + 1])
            i += 2
            continue
        assert c != '"', "an unescaped quote would end the literal early"
        out.append(c)
        i += 1
    return "".join(out)


@pytest.mark.parametrize(
    "value",
    ["plain", 'a"b', "back\\slash", '\\"', 'x"] or true or tags["', "ünïcödé 🎉", "it's"],
)
def test_quote_round_trips_hostile_strings(value: str) -> None:
    literal = quote(value)
    assert _unquote(literal) == value


def test_quote_refuses_control_characters() -> None:
    with pytest.raises(InvalidFilterError):
        quote("line\nbreak")


def test_empty_filter_is_empty_expression() -> None:
    assert build_expression(SearchFilter()) == ""


def test_expression_has_every_clause() -> None:
    expr = build_expression(
        SearchFilter(
            modalities=("image", "text"),
            since_ms=1000,
            until_ms=2000,
            tags=("cat", 'q"t'),
            lang="en",
            exclude_post_ids=("p1",),
            model_version="v1",
        )
    )
    assert expr == (
        '(modality in ["image", "text"]) and (created_at >= 1000) and (created_at < 2000)'
        ' and (array_contains_any(tags, ["cat", "q\\"t"])) and (lang == "en")'
        ' and (model_version == "v1") and (post_id not in ["p1"])'
    )


@pytest.mark.parametrize(
    "flt",
    [
        SearchFilter(modalities=("audio",)),
        SearchFilter(since_ms=5, until_ms=5),
        SearchFilter(since_ms=True),  # type: ignore[arg-type]
        SearchFilter(since_ms="5"),  # type: ignore[arg-type]
        SearchFilter(since_ms=-(2**63)),  # Milvus cannot parse int64's minimum
        SearchFilter(until_ms=2**63),
        SearchFilter(tags=("",)),
        SearchFilter(tags=("a\x00b",)),
        SearchFilter(tags=tuple(f"t{i}" for i in range(65))),
        SearchFilter(lang="x" * 65),
        SearchFilter(exclude_post_ids=("\ud800",)),  # lone surrogate: not encodable
        SearchFilter(model_version=""),
        SearchFilter(sources=("",)),
        SearchFilter(sources="bluesky"),  # type: ignore[arg-type]  # a string, not a list
        SearchFilter(authors=("a\nb",)),
        SearchFilter(authors=tuple(f"a{i}" for i in range(65))),
    ],
)
def test_invalid_filters_are_refused(flt: SearchFilter) -> None:
    with pytest.raises(InvalidFilterError):
        validate_filter(flt)


def test_long_tags_are_cut_like_stored_tags() -> None:
    tag = "é" * 300  # 600 bytes
    flt = validate_filter(SearchFilter(tags=(tag,)))
    assert flt.tags == (truncate_utf8(tag, TAG_MAX_BYTES),)
    assert len(flt.tags[0].encode()) <= TAG_MAX_BYTES


def test_post_expression_escapes() -> None:
    assert post_expression('a"b') == 'post_id == "a\\"b"'


def _row(**kw: object) -> IndexRow:
    base: dict[str, object] = dict(
        row_id="p:text:0",
        post_id="p",
        item=0,
        modality="text",
        vector=[1.0, 0.0],
        created_at_ms=1500,
        author="a",
        text="t",
        tags=("cat", "dog"),
        lang="en",
        model_version="v1",
        media_ref="",
        source="bluesky",
    )
    base.update(kw)
    return IndexRow(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (SearchFilter(), True),
        (SearchFilter(modalities=("image",)), False),
        (SearchFilter(since_ms=1500), True),  # inclusive
        (SearchFilter(until_ms=1500), False),  # exclusive
        (SearchFilter(tags=("bird", "dog")), True),  # any of
        (SearchFilter(tags=("bird",)), False),
        (SearchFilter(lang="fr"), False),
        (SearchFilter(model_version="v2"), False),
        (SearchFilter(exclude_post_ids=("p",)), False),
        (SearchFilter(post_ids=("q", "p")), True),  # a trend's members
        (SearchFilter(post_ids=("q",)), False),
        (SearchFilter(sources=("bluesky", "mastodon")), True),  # any of
        (SearchFilter(sources=("clipart",)), False),
        (SearchFilter(authors=("a", "b")), True),
        (SearchFilter(authors=("A",)), False),  # exact match
        (SearchFilter(sources=("bluesky",), authors=("b",)), False),  # all given must hold
    ],
)
def test_matches(flt: SearchFilter, expected: bool) -> None:
    assert matches(_row(), validate_filter(flt)) is expected


def test_member_ids_clause_escapes_and_an_empty_set_is_refused() -> None:
    expr = build_expression(SearchFilter(post_ids=('a"] or true or ["', "b", "b")))
    assert expr == '(post_id in ["a\\"] or true or [\\"", "b"])'
    with pytest.raises(InvalidFilterError, match="empty post-id set"):
        validate_filter(SearchFilter(post_ids=()))
    with pytest.raises(InvalidFilterError, match="more than 1000"):
        validate_filter(SearchFilter(post_ids=tuple(str(i) for i in range(1001))))


def test_source_and_author_clauses_escape_their_values() -> None:
    expr = build_expression(SearchFilter(sources=("bluesky",), authors=('@x"y', "did:plc:a")))
    assert expr == '(source in ["bluesky"]) and (author in ["@x\\"y", "did:plc:a"])'
    # Values are de-duplicated, order kept.
    assert validate_filter(SearchFilter(sources=("a", "b", "a"))).sources == ("a", "b")


def test_only_filters_that_keep_part_of_the_rows_widen_the_graph_search() -> None:
    from crossfeed.indexer.base import SearchFilter

    assert not SearchFilter().narrows()
    assert not SearchFilter(model_version="v1", exclude_post_ids=("p1",)).narrows()
    for narrowing in (
        SearchFilter(tags=("cats",)),
        SearchFilter(modalities=("image",)),
        SearchFilter(since_ms=0),
        SearchFilter(until_ms=1),
        SearchFilter(lang="en"),
        SearchFilter(sources=("bluesky",)),
        SearchFilter(authors=("@a",)),
        SearchFilter(post_ids=("p1", "p2")),  # a trend's posts
    ):
        assert narrowing.narrows(), narrowing
