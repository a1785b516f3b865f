"""Property-based fuzzing of the Post parser and the normalize stage's parse path.

Whatever arrives on ``posts.raw`` (arbitrary bytes, JSON of any shape, posts with hostile
field values), :class:`Post` either validates or raises pydantic's ``ValidationError``,
and the normalize stage answers with exactly one message: a clean post that the next
stage can parse, or a dead letter with a reason. Short and long (``slow``) passes: see
the ``examples`` fixture in tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from crossfeed.core.schema import MAX_ID_CHARS, CleanPost, DeadLetter, Post
from crossfeed.core.settings import KafkaSettings
from crossfeed.streams.dedupe import InMemoryDedupeStore
from crossfeed.streams.metrics import WorkerMetrics
from crossfeed.streams.normalize import NormalizeStage
from crossfeed.streams.testing import RecordingPublisher

TOPICS = KafkaSettings()
ANY_CHAR = st.characters(codec=None, exclude_categories=())  # lone surrogates included
ANY_TEXT = st.text(ANY_CHAR, max_size=40)
JSON_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    ANY_TEXT,
)
JSON = st.recursive(
    JSON_SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(ANY_TEXT, inner, max_size=4)
    ),
    max_leaves=12,
)
HOSTILE_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "\ud800",
        "a\udfffb",
        "x" * 201,
        "é" * 10_001,
        "https://127.0.0.1/a.png",
        "file:///etc/passwd",
        "HTTP://EXAMPLE.COM/A.PNG",
        "../../etc/passwd",
        "@@@@",
        "aGVsbG8=",
        "\u202e\u2066",
        "2024-13-45T99:99:99Z",
        "0001-01-01T00:00:00+23:59",
        "9999-12-31T23:59:59-23:59",
        "1e309",
        "NaN",
    ]
)
VALUE = st.one_of(HOSTILE_STRINGS, JSON)
MEDIA = st.fixed_dictionaries(
    {"kind": st.sampled_from(["image", "video", "audio", 1])},
    optional={
        "url": st.one_of(HOSTILE_STRINGS, st.just("https://cdn.example/a.png")),
        "path": HOSTILE_STRINGS,
        "data_base64": st.one_of(HOSTILE_STRINGS, st.just("iVBORw0KGgo=")),
        "mime": VALUE,
        "extra": VALUE,
    },
)
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "schema_version": st.one_of(st.just(1), VALUE),
    "id": st.one_of(st.text(min_size=1, max_size=20), VALUE),
    "source": st.one_of(st.just("test"), VALUE),
    "author": st.one_of(st.just("@kate"), VALUE),
    "created_at": st.one_of(
        st.datetimes(timezones=st.one_of(st.none(), st.timezones())).map(datetime.isoformat),
        st.integers(min_value=-(2**64), max_value=2**64),
        VALUE,
    ),
    "text": st.one_of(ANY_TEXT, VALUE),
    "tags": st.one_of(st.lists(ANY_TEXT, max_size=70), VALUE),
    "media": st.one_of(st.lists(MEDIA, max_size=9), VALUE),
    "lang": st.one_of(st.none(), st.just("en"), VALUE),
    "metadata": st.one_of(st.none(), JSON),
}


@st.composite
def post_like(draw: st.DrawFn) -> dict[str, Any]:
    """A dict shaped like a post: each field present or not, sane or hostile."""
    keys = draw(st.sets(st.sampled_from(sorted(FIELDS))))
    obj = {k: draw(FIELDS[k]) for k in sorted(keys)}
    if draw(st.booleans()):
        obj[draw(ANY_TEXT)] = draw(VALUE)  # an unknown field
    return obj


def _encode(obj: Any) -> bytes:
    """JSON bytes; lone surrogates travel as \\u escapes, as a broken producer sends them."""
    return json.dumps(obj, ensure_ascii=True).encode("ascii")


RAW = st.one_of(
    st.binary(max_size=200),
    JSON.map(_encode),
    post_like().map(_encode),
)


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


def test_property_post_parser_raises_only_validation_errors(examples: int) -> None:
    """Any JSON value either is a Post or fails with ValidationError; an accepted Post
    keeps its invariants and survives the wire (it serialises and parses back equal)."""

    def check(obj: Any) -> None:
        try:
            post = Post.model_validate(obj)
        except ValidationError:
            return
        assert 1 <= len(post.id) <= MAX_ID_CHARS
        assert post.created_at.tzinfo is not None
        assert post.text.strip() or post.tags or post.media
        for item in post.media:
            assert sum(bool(x) for x in (item.url, item.path, item.data_base64)) == 1
        assert Post.model_validate_json(post.model_dump_json()) == post

    _run(examples, st.one_of(post_like(), JSON), check)


def test_property_normalize_answers_every_message_exactly_once(examples: int) -> None:
    """One message in, one message out: a clean post the embed stage can parse, or a
    dead letter (stage, reason, the payload) that parses too. Nothing raises."""

    def check(raw: bytes) -> None:
        publisher = RecordingPublisher()
        stage = NormalizeStage(
            dedupe=InMemoryDedupeStore(),
            publisher=publisher,
            topics=TOPICS,
            metrics=WorkerMetrics(),
        )
        outcome = asyncio.run(stage.handle(raw))
        assert len(publisher.messages) == 1
        [(topic, key, value)] = publisher.messages
        if outcome == "deadletter":
            assert topic == TOPICS.topic_deadletter
            letter = DeadLetter.model_validate_json(value)
            assert letter.reason.strip()
            assert letter.stage in ("parse", "validate", "normalize")
            if letter.payload_encoding == "utf-8":
                assert raw.startswith(letter.payload.encode("utf-8"))
        else:
            assert outcome in ("clean", "duplicate")
            assert topic == TOPICS.topic_clean
            clean = CleanPost.model_validate_json(value)
            assert key == clean.post.id
            assert clean.clean_text or clean.hashtags or clean.post.media

    _run(examples, RAW, check)
