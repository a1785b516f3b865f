"""Text cleaning, hashtag normalisation, segmentation and the content hash."""

from __future__ import annotations

import base64

import pytest

from crossfeed.core.schema import MediaItem
from crossfeed.core.text import (
    clean_text,
    clean_text_and_hashtags,
    content_hash,
    embedding_text,
    emoji_to_text,
    media_identity,
    merge_hashtags,
    normalize_hashtag,
    segment_words,
    split_camel_case,
    squeeze_elongations,
    strip_mentions,
    strip_urls,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see https://t.co/xyz now", "see now"),
        ("docs at http://example.com/a?b=1#c.", "docs at"),
        ("visit www.example.org/path today", "visit today"),
        ("HTTPS://EXAMPLE.COM caps", "caps"),
        ("no links here", "no links here"),
    ],
)
def test_strip_urls(text: str, expected: str) -> None:
    assert clean_text(strip_urls(text)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@bob hi there", "hi there"),
        ("thanks @alice_99!", "thanks !"),
        ("@carol: reply", "reply"),
        ("mail me at me@example.com", "mail me at me@example.com"),
        ("@名前 こんにちは", "こんにちは"),
        ("from @bob@mastodon.social with love", "from with love"),  # a fediverse handle
        ("@0@0 x", "x"),  # no half-removed mention left for the next pass
    ],
)
def test_strip_mentions(text: str, expected: str) -> None:
    assert clean_text(strip_mentions(text)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("love it 🔥", "love it fire"),
        ("🔥🔥🔥 hot", "fire hot"),  # a run of the same emoji counts once
        ("ok 👍🏽", "ok thumbs up"),  # skin tone dropped
        ("family 👨\u200d👩\u200d👧 day", "family family man woman girl day"),
        ("go 🇫🇷", "go France"),
        ("😂 and 😂", "face with tears of joy and face with tears of joy"),
        ("plain", "plain"),
    ],
)
def test_emoji_to_text(text: str, expected: str) -> None:
    assert clean_text(emoji_to_text(text)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sooooo good", "soo good"),
        ("goooood", "good"),
        ("yesss", "yess"),
        ("wow!!!!! really???", "wow! really?"),
        ("wait.......", "wait..."),
        ("1000000 views", "1000000 views"),  # digits untouched
        ("coool", "cool"),
        ("ääääh", "ääh"),
    ],
)
def test_squeeze_elongations(text: str, expected: str) -> None:
    assert squeeze_elongations(text) == expected


@pytest.mark.parametrize(
    ("text", "clean", "tags"),
    [
        (
            "Sooooo goooood!!! https://t.co/a @bob #SunsetBeach #tbt",
            "Soo good!",
            ["sunset beach", "tbt"],
        ),
        ("I love #NewYork in spring", "I love new york in spring", ["new york"]),
        ("#Python is great", "python is great", ["python"]),
        ("#love #summer", "", ["love", "summer"]),
        ("#1 fan of this", "#1 fan of this", []),  # "#1" is a rank, not a hashtag
        ("great day (#beach)!", "great day", ["beach"]),
        ("  lots \n\n of\t\tspace  ", "lots of space", []),
        ("𝓯𝓪𝓷𝓬𝔂 letters", "fancy letters", []),
        ("Tom &amp; Jerry", "Tom & Jerry", []),
        ("zero\u200bwidth", "zerowidth", []),
        ("Café au lait #CaféParis", "Café au lait", ["café paris"]),
        ("東京 #東京タワー", "東京", ["東京タワー"]),
        ("#beach #Beach #BEACH", "", ["beach"]),
        ("love #cats,#dogs too", "love cats,dogs too", ["cats", "dogs"]),  # every tag
        ("#0Http://x.io y", "0 y", ["0 http"]),  # a tag's words cannot complete a link
    ],
)
def test_clean_text_and_hashtags(text: str, clean: str, tags: list[str]) -> None:
    assert clean_text_and_hashtags(text) == (clean, tags)


@pytest.mark.parametrize(
    ("word", "parts"),
    [
        ("SunsetBeach", ["Sunset", "Beach"]),
        ("NYCMarathon", ["NYC", "Marathon"]),
        ("iPhone", ["iPhone"]),
        ("eBay", ["eBay"]),
        ("covid19", ["covid", "19"]),
        ("2024Goals", ["2024", "Goals"]),
        ("mp3", ["mp3"]),
        ("h2o", ["h2o"]),
        ("4k", ["4k"]),
        ("lowercase", ["lowercase"]),
        ("ÉtéÀParis", ["Été", "À", "Paris"]),
        ("", []),
    ],
)
def test_split_camel_case(word: str, parts: list[str]) -> None:
    assert split_camel_case(word) == parts


@pytest.mark.parametrize(
    ("word", "parts"),
    [
        ("sunsetbeach", ["sunset", "beach"]),
        ("throwbackthursday", ["throwback", "thursday"]),
        ("photooftheday", ["photo", "of", "the", "day"]),
        ("newyorkcity", ["new", "york", "city"]),
        ("nofilter", ["no", "filter"]),
        ("summer", ["summer"]),
        ("tbt", ["tbt"]),  # too short to split
        ("selfie", ["selfie"]),  # "self ie" is a guess: rejected
        ("igers", ["igers"]),  # "iger s": rejected
        ("café", ["café"]),  # not ASCII: left alone
    ],
)
def test_segment_words(word: str, parts: list[str]) -> None:
    assert segment_words(word) == parts


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("#SunsetBeach", "sunset beach"),
        ("sunset_beach", "sunset beach"),
        ("#sunsetbeach", "sunset beach"),
        ("#sunset-beach", "sunset beach"),
        ("  #Sunset Beach ", "sunset beach"),
        ("##", ""),
        ("#ThrowbackThursday", "throwback thursday"),
        ("#iPhone15", "iphone 15"),
        ("#NYC", "nyc"),
        ("#ＦＵＬＬＷＩＤＴＨ", "full width"),  # all-caps words segment like lower-case ones
        ("#SUNSETBEACH", "sunset beach"),
        ("#Straße", "stra sse"),  # folded first ("strasse"), so normalising again agrees
        ("#İstanbul", "istanbul"),  # no combining dot left behind by casefolding
        ("#x" + "a" * 500, "x" + "a" * 99),  # capped length, no pathological segmentation
    ],
)
def test_normalize_hashtag(tag: str, expected: str) -> None:
    assert normalize_hashtag(tag) == expected


def test_merge_hashtags_text_first_then_field_deduplicated() -> None:
    assert merge_hashtags(["sunset beach", "tbt"], ["#TBT", "Food", "sunset_beach"]) == [
        "sunset beach",
        "tbt",
        "food",
    ]


def test_embedding_text_appends_only_missing_hashtags() -> None:
    assert embedding_text("I love new york", ["new york", "pizza"]) == "I love new york pizza"
    assert embedding_text("", ["beach"]) == "beach"
    assert embedding_text("", []) == ""


def _image(data: bytes) -> MediaItem:
    return MediaItem(kind="image", data_base64=base64.b64encode(data).decode())


def test_content_hash_is_stable_across_cosmetic_differences() -> None:
    a = content_hash("Hello  World", ["b", "a"], [_image(b"xyz")])
    b = content_hash("hello world", ["a", "b"], [_image(b"xyz")])
    assert a == b and len(a) == 64


@pytest.mark.parametrize(
    ("other_text", "other_tags", "other_media"),
    [
        ("hello there", ["a"], [b"xyz"]),
        ("hello world", ["c"], [b"xyz"]),
        ("hello world", ["a"], [b"xyZ"]),
        ("hello world", ["a"], []),
    ],
)
def test_content_hash_differs_when_content_differs(
    other_text: str, other_tags: list[str], other_media: list[bytes]
) -> None:
    base = content_hash("hello world", ["a"], [_image(b"xyz")])
    assert content_hash(other_text, other_tags, [_image(m) for m in other_media]) != base


def test_media_identity_by_source() -> None:
    assert media_identity(MediaItem(kind="image", path="a/./b/../c.png")) == "image:path:a/c.png"
    assert (
        media_identity(MediaItem(kind="video", url="https://x.org/v.mp4#t=3"))
        == "video:url:https://x.org/v.mp4"
    )
    assert media_identity(_image(b"1")) != media_identity(_image(b"2"))
    with pytest.raises(ValueError, match="base64"):
        media_identity(MediaItem(kind="image", data_base64="!!!not base64"))
