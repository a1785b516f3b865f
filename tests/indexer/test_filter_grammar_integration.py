"""Generated filter expressions against the real Milvus: zero parse errors, exact matches.

One collection (unique name, dropped afterwards) holds rows whose tags, lang, post ids and
model versions are hostile strings (quotes, backslashes, escape sequences Milvus would
decode, ``or 1==1`` payloads, unicode, strings at the byte limits). Every generated filter
that validation accepts is sent to Milvus as a query: it must parse, and it must return
exactly the rows :func:`crossfeed.indexer.filters.matches` (the in-memory semantics)
says match, nothing else. Injection payloads get rows of their own plus rows holding what
the payload would become if Milvus decoded an escape (``"\\u0022"`` beside ``'"'``).
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossfeed.core.settings import MilvusSettings
from crossfeed.indexer.base import IndexRow, SearchFilter
from crossfeed.indexer.client import milvus_client
from crossfeed.indexer.exceptions import InvalidFilterError
from crossfeed.indexer.filters import build_expression, matches, post_expression, validate_filter
from crossfeed.indexer.milvus import MilvusIndex
from crossfeed.indexer.schema import (
    ID_MAX_BYTES,
    LANG_MAX_BYTES,
    MODEL_VERSION_MAX_BYTES,
    TAG_MAX_BYTES,
    prepare_row,
)

pytestmark = pytest.mark.integration

DIM = 8
# Each payload next to what it would be if an escape were decoded (must NOT match it).
PAYLOADS: list[tuple[str, str | None]] = [
    ('"', None),
    ("\\", None),
    ('\\"', '"'),
    ("'", None),
    ("\\'", "'"),
    ("\\u0022", '"'),
    ("\\U0001F389", "🎉"),
    ("\\x41", "A"),
    ("\\101", "A"),
    ("\\n", "\n"),
    ("\\t", "\t"),
    ("\\\\", "\\"),
    ("\\?", "?"),
    ('a" or 1==1 or tags["', "a"),
    ('x") or (1 == 1', "x"),
    ("x' or '1'=='1", "x"),
    ('"]) or true or (["', None),
    (" or true", None),
    ("$meta", None),
    ("%", None),
    ("like", None),
    ("\u2028", None),
    ("\x85", None),
    ("🎉", None),
    ("日本語", None),
    ("é" * (TAG_MAX_BYTES // 2), None),  # exactly the stored size
    ("\\" * (TAG_MAX_BYTES // 2), None),
    ('"' * 100, None),
]
POOL = sorted({p for p, _ in PAYLOADS} | {d for _, d in PAYLOADS if d is not None})


def _fits(value: str, limit: int) -> str:
    return value if len(value.encode()) <= limit else value[: limit // 4]


def _unit(seed: str) -> list[float]:
    v = np.random.default_rng(zlib.crc32(seed.encode())).standard_normal(DIM)
    return (v / np.linalg.norm(v)).tolist()


def _rows() -> list[IndexRow]:
    rows: list[IndexRow] = []
    for i, value in enumerate(POOL):
        rows.append(
            IndexRow(
                row_id=f"r{i}",
                post_id=_fits(value, ID_MAX_BYTES),
                item=i % 3,
                modality=("text", "image", "video")[i % 3],
                vector=_unit(value),
                created_at_ms=1_000 * i - 5_000,
                author="a",
                text="t",
                tags=(value, POOL[(i * 7) % len(POOL)]),
                lang=_fits(value, LANG_MAX_BYTES),
                model_version=_fits(value, MODEL_VERSION_MAX_BYTES),
                media_ref="",
            )
        )
    return [prepare_row(r, DIM) for r in rows]


ROWS = _rows()


@pytest.fixture(scope="module")
def collection(engines: object) -> Iterator[tuple[object, str]]:
    """A loaded collection holding ``ROWS`` (read-only, so shared by the module's tests);
    yields (a pymilvus client, its name). Unique name as tests/conftest.py's make_name."""
    settings_ = MilvusSettings(CROSSFEED_COLLECTION=f"grammar_{uuid.uuid4().hex[:10]}")
    index = MilvusIndex(settings_, consistency_level="Strong")
    index.ensure_ready(DIM)
    client = milvus_client(settings_)
    try:
        index.upsert(ROWS)
        # Written with strong consistency; the queries below need not wait for it again.
        assert _query(client, index.collection, 'row_id != ""', "Strong") == {
            r.row_id for r in ROWS
        }
        yield client, index.collection
    finally:
        client.close()
        index.drop()
        index.close()


def _query(client: object, name: str, expr: str, consistency: str = "Eventually") -> set[str]:
    found = client.query(  # type: ignore[attr-defined]
        name, filter=expr, output_fields=["row_id"], limit=16_384, consistency_level=consistency
    )
    return {str(r["row_id"]) for r in found}


def _expected(flt: SearchFilter) -> set[str]:
    return {r.row_id for r in ROWS if matches(r, flt)}


PRINTABLE = [p for p in POOL if not any(ord(c) < 0x20 for c in p)]  # what filters accept
TEXT = st.one_of(
    st.sampled_from(PRINTABLE),
    st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=12),
)
MS = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.integers(-10_000, 40_000))


@st.composite
def filters(draw: st.DrawFn) -> SearchFilter:
    """Mostly filters validation accepts (a few are refused: control characters...)."""
    since, until = draw(MS), draw(MS)
    if since is not None and until is not None and since >= until:
        since, until = until - 1 if until > -(2**63) else None, since + 1
        until = until if until <= 2**63 - 1 else None
    return SearchFilter(
        modalities=tuple(draw(st.lists(st.sampled_from(["text", "image", "video"]), max_size=3))),
        since_ms=since,
        until_ms=until,
        tags=tuple(draw(st.lists(TEXT, max_size=4))),
        lang=draw(st.one_of(st.none(), TEXT.map(lambda t: _fits(t, LANG_MAX_BYTES)))),
        exclude_post_ids=tuple(draw(st.lists(TEXT, max_size=4))),
        post_ids=draw(st.one_of(st.none(), st.lists(TEXT, min_size=1, max_size=4).map(tuple))),
        model_version=draw(st.one_of(st.none(), st.just("v1"), TEXT.map(lambda t: _fits(t, 128)))),
    )


def test_property_generated_expressions_parse_and_match_exactly(
    collection: tuple[object, str], examples: int
) -> None:
    client, name = collection
    counts = {"sent": 0, "refused": 0, "matched": 0}

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(filters())
    def prop(flt: SearchFilter) -> None:
        try:
            valid = validate_filter(flt)
            expr = build_expression(flt)
        except InvalidFilterError:
            counts["refused"] += 1
            return
        counts["sent"] += 1
        got = _query(client, name, expr) if expr else _query(client, name, 'row_id != ""')
        assert got == _expected(valid), expr
        counts["matched"] += bool(got)

    prop()
    # The generator reaches real matches, not only empty answers.
    assert counts["sent"] >= examples // 2 and counts["matched"] >= examples // 25, counts


@pytest.mark.parametrize(("payload", "decoded"), PAYLOADS)
def test_injection_payloads_match_exactly_their_own_rows(
    collection: tuple[object, str], payload: str, decoded: str | None
) -> None:
    """As a tag, a lang, a model version, an excluded id, a member id (trend-scoped search)
    and a post id, the payload selects exactly the rows holding that value, never the
    decoded look-alike."""
    client, name = collection
    for flt in (
        SearchFilter(tags=(payload,)),
        SearchFilter(lang=_fits(payload, LANG_MAX_BYTES)),
        SearchFilter(model_version=_fits(payload, MODEL_VERSION_MAX_BYTES)),
        SearchFilter(exclude_post_ids=(payload,)),
        SearchFilter(post_ids=(payload,)),  # a trend-scoped search's members
    ):
        valid = validate_filter(flt)
        got = _query(client, name, build_expression(valid))
        assert got == _expected(valid), flt
        if not flt.exclude_post_ids:
            assert got, f"{flt}: the payload's own rows must match"
        if decoded is not None:  # the look-alike's own row, unless it holds the payload
            twin = next(r for r in ROWS if r.post_id == decoded)
            assert (twin.row_id in got) == matches(twin, valid), "a decoded look-alike matched"
    assert _query(client, name, post_expression(payload)) == {
        r.row_id for r in ROWS if r.post_id == payload
    }


def test_the_longest_expression_is_accepted(collection: tuple[object, str]) -> None:
    """1000 excluded ids of the maximal size (a ~1 MB expression) still parse."""
    client, name = collection
    ids = tuple("\\" * 1000 + '"' * 21 + f"{i:03}" for i in range(1000))
    assert all(len(i.encode()) == ID_MAX_BYTES for i in ids)
    flt = SearchFilter(exclude_post_ids=ids, tags=tuple(PRINTABLE[:64]))
    expr = build_expression(flt)
    assert len(expr) > 1_000_000
    assert _query(client, name, expr) == _expected(validate_filter(flt))
