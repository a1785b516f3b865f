"""Property-based fuzzing of text cleaning, hashtag normalisation and the content hash.

Each property runs twice (the ``examples`` fixture, tests/conftest.py): a short pass in
every run and a long pass marked ``slow`` (``CROSSFEED_PROPERTY_EXAMPLES`` examples).
"""

from __future__ import annotations

import unicodedata

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossfeed.core.schema import MAX_TAGS, MediaItem
from crossfeed.core.text import (
    clean_text,
    clean_text_and_hashtags,
    content_hash,
    embedding_text,
    merge_hashtags,
    normalize_hashtag,
    normalize_hashtags,
    squeeze_elongations,
    squeeze_whitespace,
)

# Any code point, lone surrogates included: JSON's "\ud800" escapes decode to them.
ANY_CHAR = st.characters(codec=None, exclude_categories=())
ANY_TEXT = st.text(ANY_CHAR, max_size=80)

# Tokens social posts are made of, hostile ones included.
TOKENS = [
    "#SunsetBeach",
    "#sunset_beach",
    "#NYCMarathon",
    "#covid19",
    "#1",
    "#",
    "##x",
    "#tbt!",
    "(#love)",
    "a#b",
    "&#35;tag",
    "@bob",
    "@alice:",
    "mail@example.com",
    "https://t.co/x",
    "www.example.org/p?q=1",
    "😍",
    "🔥🔥🔥",
    "👍🏽",
    "🏳️‍🌈",
    "sooooo",
    "!!!",
    "....",
    "&amp;",
    "&lt;3",
    "&amp;lt;",
    "\u200b",
    "\ufeff",
    "𝓯𝓪𝓷𝓬𝔂",
    "ﬁne",
    "İstanbul",
    "straße",
    "Ǆemal",
    "ﷺ",
    "\u0301",
    "\x00",
    "\x1b[31m",
    "\u2028",
    "\ud800",
    "日本語",
    "مرحبا",
]
SEPARATORS = st.sampled_from([" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", ""])
SOCIAL_TEXT = st.lists(
    st.tuples(st.one_of(st.sampled_from(TOKENS), ANY_TEXT), SEPARATORS), max_size=25
).map(lambda parts: "".join(token + sep for token, sep in parts))
TEXT = st.one_of(ANY_TEXT, SOCIAL_TEXT)
TAG = st.one_of(st.sampled_from(TOKENS), ANY_TEXT)


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


def _is_canonical_tag(tag: str) -> bool:
    return (
        bool(tag)
        and tag == tag.strip()
        and "  " not in tag
        and not tag.startswith("#")
        and all(c.isalnum() or c == " " for c in tag)
    )


def test_property_cleaning_never_raises_and_is_clean(examples: int) -> None:
    """Cleaning accepts any string; the clean text is squeezed and free of control
    characters; every hashtag is canonical and survives being normalised again (the API
    normalises the tag filters users copy from results: a stored tag must match itself)."""

    def check(text: str) -> None:
        cleaned, tags = clean_text_and_hashtags(text)
        assert cleaned == squeeze_whitespace(cleaned)
        assert not any(unicodedata.category(c) == "Cc" for c in cleaned)
        assert len(tags) <= MAX_TAGS and len(set(tags)) == len(tags)
        for tag in tags:
            assert _is_canonical_tag(tag), tag
            assert normalize_hashtag(tag) == tag
        assert clean_text(text) == cleaned
        embedding_text(cleaned, tags)  # never raises either

    _run(examples, TEXT, check)


def test_property_cleaning_is_idempotent(examples: int) -> None:
    """Cleaning clean text changes nothing (outside HTML entities, which decode once)."""

    def check(text: str) -> None:
        cleaned = clean_text(text)
        if "&" not in cleaned:
            assert clean_text(cleaned) == cleaned

    _run(examples, TEXT, check)


def test_property_hashtag_normalisation_is_canonical_and_idempotent(examples: int) -> None:
    def check(tag: str) -> None:
        norm = normalize_hashtag(tag)
        assert norm == "" or _is_canonical_tag(norm), norm
        assert normalize_hashtag(norm) == norm
        assert normalize_hashtag("#" + norm) == norm
        again = normalize_hashtags([tag, norm, f"  #{norm} "])
        assert again == ([norm] if norm else [])

    _run(examples, TAG, check)


def test_property_squeezing_is_idempotent(examples: int) -> None:
    def check(text: str) -> None:
        once = squeeze_elongations(text)
        assert squeeze_elongations(once) == once
        spaced = squeeze_whitespace(text)
        assert squeeze_whitespace(spaced) == spaced

    _run(examples, TEXT, check)


# ----------------------------------------------------------------- content hash

# Atoms of a post whose cosmetic variants must hash the same.
WORD = st.text("abcdefghijklmnopqrstuvwxyzé", min_size=1, max_size=8)
HASHTAG = st.sampled_from(
    ["#SunsetBeach", "#cats", "#NYC", "#covid19", "#love", "#tbt", "#new_york", "#Ǆemal"]
)
EMOJI = st.sampled_from(["😍", "🔥", "🎉", "🐱"])
ATOM = st.one_of(
    WORD.map(lambda w: ("word", w)),
    st.sampled_from(["sooo", "yesss", "whyyy", "omggg"]).map(lambda w: ("long", w)),
    EMOJI.map(lambda e: ("emoji", e)),
    HASHTAG.map(lambda h: ("tag", h)),
    st.sampled_from([",", "!", "?", "...", "&", ":)"]).map(lambda p: ("punct", p)),
    st.text(ANY_CHAR, min_size=1, max_size=6).map(lambda t: ("any", t)),
)
NOISE = st.sampled_from(
    ["https://t.co/abc", "http://x.io/?utm=1", "www.site.com/a", "@bob", "@x_1:"]
)


@st.composite
def _post_and_variant(draw: st.DrawFn) -> tuple[tuple[str, list[str]], tuple[str, list[str]]]:
    atoms = draw(st.lists(ATOM, max_size=12))
    block = draw(st.lists(HASHTAG, max_size=4))
    field = draw(st.lists(st.sampled_from(["cats", "CuteAnimals", "sunset beach", "nyc"])))

    def variant(cosmetic: bool) -> tuple[str, list[str]]:
        tokens: list[str] = []
        for kind, value in atoms:
            if cosmetic and kind not in ("emoji", "any") and draw(st.booleans()):
                # Links and mentions are dropped (not between two emoji: then the two
                # are no longer one run, and each counts; an "any" atom may be an emoji).
                tokens.append(draw(NOISE))
            if cosmetic and kind == "long":
                value = value + value[-1] * draw(st.integers(0, 5))  # more elongation
            elif cosmetic and kind == "emoji":
                value = value * draw(st.integers(1, 3))  # runs of one emoji count once
            elif cosmetic and kind == "word" and value.isascii():
                value = draw(st.sampled_from([value, value.upper(), value.capitalize()]))
            tokens.append(value)
        trailing = list(block)
        tags = list(field)
        if cosmetic:
            trailing = draw(st.permutations(trailing))  # a block of labels has no order
            tags = [
                draw(st.sampled_from([t, f"#{t}", f" {t} "])) for t in draw(st.permutations(tags))
            ]
            tags += tags[: draw(st.integers(0, len(tags)))]  # repeats count once
        seps = [draw(SEPARATORS.filter(bool)) if cosmetic else " " for _ in tokens + trailing]
        text = "".join(t + s for t, s in zip([*tokens, *trailing], seps, strict=True))
        if cosmetic:
            text = draw(SEPARATORS) + text
        return text, tags

    return variant(False), variant(True)


def _hash(text: str, tags: list[str], media: list[MediaItem]) -> str:
    """The normalize stage's recipe (streams/normalize.py)."""
    cleaned, text_tags = clean_text_and_hashtags(text)
    return content_hash(cleaned, merge_hashtags(text_tags, tags), media)


def test_property_content_hash_is_stable_under_cosmetic_changes(examples: int) -> None:
    """Reposts that differ only in whitespace, links, mentions, letter case of words,
    elongations, repeated emoji, the order of the trailing hashtag block and of the tags
    field hash the same, so they are spotted as reposts."""
    media = [MediaItem(kind="image", url="https://cdn.example/a.png#frag")]

    def check(pair: tuple[tuple[str, list[str]], tuple[str, list[str]]]) -> None:
        (text, tags), (cosmetic, cosmetic_tags) = pair
        assert _hash(text, tags, media) == _hash(cosmetic, cosmetic_tags, media), (
            clean_text(text),
            clean_text(cosmetic),
        )

    _run(examples, _post_and_variant(), check)


def test_property_content_hash_never_raises(examples: int) -> None:
    """Any text and tags hash (lone surrogates included); only bad base64 is refused."""

    def check(value: tuple[str, list[str]]) -> None:
        text, tags = value
        digest = _hash(text, tags, [])
        assert len(digest) == 64 and int(digest, 16) >= 0

    _run(examples, st.tuples(TEXT, st.lists(TAG, max_size=5)), check)


def test_squeezing_that_makes_a_link_is_cleaned_again() -> None:
    """Found by the long pass: "Wwww.0" squeezed to "Www.0", a link, which the next
    cleaning removed; cleaning runs until nothing changes."""
    assert clean_text("Wwww.0") == ""
    for text in ("Wwww.0 hi", "ok Wwww.example.com", "@@@bob wwww.x", "Sooooo wwww.0 nice"):
        cleaned = clean_text(text)
        assert clean_text(cleaned) == cleaned, (text, cleaned)
