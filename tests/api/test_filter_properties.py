"""Property-based fuzzing of the API's filters (api/models.py) down to the expression.

A request body of any shape either fails validation (pydantic's ``ValidationError``, a
422) or yields filters that always build into an index expression: an accepted request
must never fail later with an error the client cannot fix (a 500). Tag filters come out
normalised, and normalising them again changes nothing (stored tags match themselves).
Short and long (``slow``) passes: see the ``examples`` fixture in tests/conftest.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from crossfeed.api.models import SearchFilters, SearchRequest
from crossfeed.core.text import normalize_hashtag
from crossfeed.indexer.filters import build_expression

ANY_CHAR = st.characters(codec=None, exclude_categories=())
TEXT = st.one_of(
    st.text(ANY_CHAR, max_size=30),
    st.sampled_from(['"', "\\", 'x"] or true or tags["', "\\u0022", "#SunsetBeach", "İ" * 100]),
)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT)
JSON = st.recursive(
    SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=8,
)
DATES = st.one_of(
    st.datetimes(timezones=st.one_of(st.none(), st.timezones())).map(datetime.isoformat),
    st.sampled_from(["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "2024-02-30"]),
    JSON,
)
FILTER_BODY = st.fixed_dictionaries(
    {},
    optional={
        "modalities": st.one_of(
            st.lists(st.sampled_from(["text", "image", "video", "audio"]), max_size=4), JSON
        ),
        "since": DATES,
        "until": DATES,
        "tags": st.one_of(st.lists(TEXT, max_size=70), JSON),
        "lang": st.one_of(st.sampled_from(["en", "pt-BR", "zh-Hant-TW", "e"]), JSON),
        "extra": JSON,
    },
)
REQUEST_BODY = st.fixed_dictionaries(
    {},
    optional={
        "text": st.one_of(TEXT, JSON),
        "post_id": st.one_of(TEXT, st.text(ANY_CHAR, min_size=190, max_size=210), JSON),
        "filters": st.one_of(FILTER_BODY, JSON),
        "top_k": st.one_of(st.integers(), JSON),
    },
)
VERSIONS = st.sampled_from(["v1", "2026-01-01T00-00-00_abc", 'v"1', "é" * 64])


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


def test_property_accepted_filters_always_build(examples: int) -> None:
    def check(case: tuple[Any, str]) -> None:
        body, version = case
        try:
            filters = SearchFilters.model_validate(body)
        except ValidationError:
            return
        for tag in filters.tags:
            assert tag and normalize_hashtag(tag) == tag
        flt = filters.to_index_filter(model_version=version)
        build_expression(flt)  # raises nothing: InvalidFilterError here would be a 500
        filters.canonical()

    _run(examples, st.tuples(FILTER_BODY, VERSIONS), check)


def test_property_accepted_search_requests_always_build(examples: int) -> None:
    def check(case: tuple[Any, str]) -> None:
        body, version = case
        try:
            request = SearchRequest.model_validate(body)
        except ValidationError:
            return
        excluded = (request.post_id,) if request.post_id is not None else ()
        flt = request.filters.to_index_filter(model_version=version, exclude_post_ids=excluded)
        build_expression(flt)

    _run(examples, st.tuples(REQUEST_BODY, VERSIONS), check)
