"""Pure functions that turn informal post text into clean text and hashtags.

Choices (documented here because the index and the API depend on them):

* URLs and @mentions are removed: they carry no meaning a text encoder can use
  and would make reposts with a different tracking link look different.
* Emoji are kept in **text form** (``"🔥"`` -> ``"fire"``, skin tones dropped,
  runs of the same emoji collapsed): they carry sentiment and topic that the
  text encoder understands as words.
* Letters repeated three times or more are squeezed to two (``"sooooo"`` ->
  ``"soo"``, ``"goooood"`` -> ``"good"``); ``!!!``/``???`` become one; digits
  are never touched.
* Hashtags are carried separately (:attr:`CleanPost.hashtags`): the trailing
  block of hashtags is removed from the clean text, a hashtag inside a
  sentence is replaced by its words (``"I love #NewYork today"`` ->
  ``"I love new york today"``).
* A normalised hashtag is lower-case words separated by single spaces:
  ``#SunsetBeach``, ``#sunset_beach`` and ``#sunsetbeach`` all become
  ``"sunset beach"``. The API must normalise tag filters with
  :func:`normalize_hashtag` so they match what was stored.
"""

from __future__ import annotations

import functools
import hashlib
import html
import json
import os
import posixpath
import re
import unicodedata
from collections.abc import Iterable, Sequence

from crossfeed.core.schema import MAX_TAGS, MediaItem

MAX_HASHTAG_CHARS = 100  # longer tags are truncated: segmentation cost grows with length
_SEGMENT_MIN_CHARS = 5  # "tbt", "ootd", "nyc": short tags are acronyms, never split
# Two-letter words a segmentation may produce; anything else shorter than three
# letters means the split was a guess ("selfie" -> "self ie") and is rejected.
# fmt: off
_SHORT_WORDS = frozenset({
    "a", "i", "of", "in", "on", "at", "to", "my", "me", "we", "us", "no", "so", "up",
    "is", "it", "be", "by", "do", "go", "an", "or", "as", "he", "if", "oh", "ok",
})
# fmt: on

_URL_RE = re.compile(r"(?i)\b(?:https?://|www\.)\S+")
# "@bob", "@bob:", and a fediverse handle "@bob@mastodon.social" as a whole (removing only
# "@bob" would leave "@mastodon.social" behind, a new mention for the next reader).
_MENTION_RE = re.compile(r"(?<![\w@])@\w+(?:@\w+(?:\.\w+)*)*:?")
# A hashtag needs a letter: "#1" is a rank, not a topic.
_HASHTAG_RE = re.compile(r"(?<![\w&#])#(\w*[^\W\d_]\w*)")
_ELONGATED_RE = re.compile(r"([^\W\d_])\1{2,}")
_PUNCT_RUN_RE = re.compile(r"([!?])\1+")
_DOTS_RE = re.compile(r"\.{4,}")
_SKIN_TONE_RE = re.compile("[\U0001f3fb-\U0001f3ff]")
_INVISIBLE_RE = re.compile("[\u200b-\u200f\u2060\ufeff\ufe0e\ufe0f]")
_SPACE_RE = re.compile(r"\s+")
_ASCII_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_TAG_SEPARATORS_RE = re.compile(r"[_\-]+")


# --------------------------------------------------------------------------- text


def strip_urls(text: str) -> str:
    """Remove http(s) and www. links."""
    return _URL_RE.sub(" ", text)


def strip_mentions(text: str) -> str:
    """Remove @mentions (an e-mail address is left alone)."""
    return _MENTION_RE.sub(" ", text)


def emoji_to_text(text: str) -> str:
    """Replace each emoji by its name in words; collapse runs of the same emoji."""
    if text.isascii():  # fast path: every emoji is outside ASCII
        return text
    import emoji  # local: the emoji table is large and only workers need it

    text = _SKIN_TONE_RE.sub("", text)
    out: list[str] = []
    last_name: str | None = None
    pos = 0
    for token in emoji.analyze(text, non_emoji=False, join_emoji=True):
        match = token.value
        if not isinstance(match, emoji.EmojiMatch):  # pragma: no cover - non_emoji=False
            continue
        between = text[pos : match.start]
        name = emoji.demojize(match.emoji, delimiters=("", "")).replace("_", " ").strip()
        out.append(between)
        if between.strip() or name != last_name:  # a run of the same emoji counts once
            out.append(f" {name} ")
        last_name = name
        pos = match.end
    out.append(text[pos:])
    return "".join(out)


def squeeze_elongations(text: str) -> str:
    """``"sooooo"`` -> ``"soo"``; ``"!!!"`` -> ``"!"``; ``"....."`` -> ``"..."``."""
    text = _ELONGATED_RE.sub(r"\1\1", text)
    text = _PUNCT_RUN_RE.sub(r"\1", text)
    return _DOTS_RE.sub("...", text)


def squeeze_whitespace(text: str) -> str:
    return _SPACE_RE.sub(" ", text).strip()


def _prepare(text: str) -> str:
    """Decode HTML entities, emoji to words, fold compatibility forms (𝓯𝓪𝓷𝓬𝔂 -> fancy)."""
    text = html.unescape(unicodedata.normalize("NFC", text))
    text = emoji_to_text(text)
    text = unicodedata.normalize("NFKC", text)
    text = _INVISIBLE_RE.sub("", text)
    if text.isascii():
        return _ASCII_CONTROL_RE.sub(" ", text)
    return "".join(" " if unicodedata.category(c) in ("Cc", "Cf") else c for c in text)


def clean_text(text: str) -> str:
    """Clean informal text: no URLs, mentions, hashtag blocks; emoji as words; squeezed."""
    return clean_text_and_hashtags(text)[0]


def clean_text_and_hashtags(text: str) -> tuple[str, list[str]]:
    """Clean ``text`` and return it with the normalised hashtags found in it, in order."""
    text = strip_mentions(strip_urls(_prepare(text)))
    tokens = text.split()
    is_tag = [_HASHTAG_RE.fullmatch(_strip_punct(t)) is not None for t in tokens]
    # A trailing run of hashtags is a block of topic labels, not prose.
    trail = len(tokens)
    while trail > 0 and is_tag[trail - 1]:
        trail -= 1
    words: list[str] = []
    tags: list[str] = []
    for i, token in enumerate(tokens):
        if i < trail:  # inside a sentence: every hashtag ("#cats,#dogs") becomes its words
            words.append(_HASHTAG_RE.sub(lambda m: _collect(m.group(1), tags), token))
            continue
        match = _HASHTAG_RE.search(token)  # in the trailing block: one tag per token
        assert match is not None
        _collect(match.group(1), tags)
        rest = token[: match.start()] + token[match.end() :]
        if _strip_punct(rest):
            words.append(rest)
    # A hashtag replaced by its words can complete a link or a mention around it
    # ("#0Http://x" -> "0 http://x"): strip those too, so clean text is clean.
    cleaned = squeeze_whitespace(strip_mentions(strip_urls(" ".join(words))))
    # Squeezing an elongation can make a link ("Wwww.0" -> "Www.0") and stripping one can
    # join a run; repeat until nothing changes (each pass only shortens the text).
    for _ in range(8):
        again = squeeze_whitespace(strip_mentions(strip_urls(squeeze_elongations(cleaned))))
        if again == cleaned:
            break
        cleaned = again
    return cleaned, _unique(tags)


def _collect(raw_tag: str, tags: list[str]) -> str:
    """Normalise ``raw_tag``, append it to ``tags`` when not empty, and return it."""
    tag = normalize_hashtag(raw_tag)
    if tag:
        tags.append(tag)
    return tag


def _strip_punct(token: str) -> str:
    return token.strip(".,;:!?…()[]{}\"'“”‘’")


# --------------------------------------------------------------------------- hashtags


def split_camel_case(word: str) -> list[str]:
    """``"SunsetBeach"`` -> ``["Sunset", "Beach"]``; ``"NYCMarathon"`` -> ``["NYC", "Marathon"]``.

    A single leading lower-case letter stays attached (``iPhone``, ``eBay``); a
    letter/digit boundary splits only when every letter part has three or more
    letters (``covid19`` -> ``covid 19`` but ``mp3``, ``h2o``, ``4k`` stay whole).
    """
    if not word:
        return []
    parts: list[str] = []
    current = word[0]
    for prev, ch, nxt in zip(word, word[1:], [*word[2:], ""], strict=False):
        boundary = (
            (prev.islower() and ch.isupper() and not (len(current) == 1 and not parts))
            or (prev.isupper() and ch.isupper() and nxt.islower())
            or (prev.isdigit() != ch.isdigit())
        )
        if boundary:
            parts.append(current)
            current = ch
        else:
            current += ch
    parts.append(current)
    return _merge_short_digit_splits(parts)


def _merge_short_digit_splits(parts: list[str]) -> list[str]:
    letter_parts = [p for p in parts if not p.isdigit()]
    if any(p.isdigit() for p in parts) and any(len(p) < 3 for p in letter_parts):
        # A guess like "h 2 o": glue the digit boundaries back together.
        merged: list[str] = []
        for part in parts:
            if merged and (part.isdigit() or merged[-1][-1:].isdigit()):
                merged[-1] += part
            else:
                merged.append(part)
        return merged
    return parts


@functools.cache
def _wordninja_model():  # type: ignore[no-untyped-def]
    import wordninja  # local: loads its word list (offline, shipped in the wheel)

    return wordninja.DEFAULT_LANGUAGE_MODEL


def segment_words(word: str) -> list[str]:
    """Split a run-together lower-case word: ``"sunsetbeach"`` -> ``["sunset", "beach"]``.

    Uses Wikipedia unigram frequencies (``wordninja``, shipped offline). The
    split is kept only when it looks like real words: every piece has three or
    more letters or is a common short word. Otherwise the word stays whole, so
    acronyms and slang (``tbt``, ``selfie``) are not mangled.
    """
    if len(word) < _SEGMENT_MIN_CHARS or not word.isascii() or not word.isalpha():
        return [word]
    pieces = _wordninja_model().split(word.lower())
    if len(pieces) <= 1 or "".join(pieces) != word.lower():
        return [word]
    if all(len(p) >= 3 or p in _SHORT_WORDS for p in pieces):
        return pieces
    return [word]


# Normalising a tag again must give the same tag (the API normalises the tag filters users
# copy from stored tags). A few inputs need a second look: casefolding can turn a word into
# one that segments ("straße" -> "strasse") or can leave marks behind ("İ" -> "i̇").
_MAX_NORMALIZE_PASSES = 4


@functools.lru_cache(maxsize=65536)  # pure, and popular tags repeat all day
def normalize_hashtag(tag: str) -> str:
    """Canonical form of a hashtag: lower-case words separated by single spaces.

    ``"#SunsetBeach"``, ``"sunset_beach"``, ``"#sunsetbeach"`` -> ``"sunset beach"``.
    Returns ``""`` when nothing is left. The result is a fixed point:
    ``normalize_hashtag(normalize_hashtag(t)) == normalize_hashtag(t)``, so a stored tag
    used as a filter matches itself. It has at most ``MAX_HASHTAG_CHARS`` characters.
    """
    out = _normalize_hashtag_once(tag)
    for _ in range(_MAX_NORMALIZE_PASSES):
        again = _normalize_hashtag_once(out)
        if again == out:
            break
        out = again
    return out


def _normalize_hashtag_once(tag: str) -> str:
    tag = unicodedata.normalize("NFKC", tag).strip().lstrip("#").strip()
    tag = tag[:MAX_HASHTAG_CHARS]
    words: list[str] = []
    for chunk in _TAG_SEPARATORS_RE.split(tag):
        for sub in chunk.split():
            sub = "".join(c for c in sub if c.isalnum())
            for part in split_camel_case(sub):
                # Fold first, then segment: the case a word was written in is gone from
                # the result, so it cannot decide anything (all-caps words segment too).
                folded = _fold(part)
                if folded.isalpha():
                    words.extend(segment_words(folded))
                else:
                    words.append(folded)
    return squeeze_whitespace(" ".join(w for w in words if w))[:MAX_HASHTAG_CHARS].rstrip()


def _fold(word: str) -> str:
    """Case-folded, compatibility-normalised, letters and digits only."""
    folded = unicodedata.normalize("NFKC", word.casefold())
    return "".join(c for c in folded if c.isalnum())


def normalize_hashtags(tags: Iterable[str]) -> list[str]:
    """Normalise each tag, dropping empties and repeats (first occurrence wins)."""
    return _unique(normalize_hashtag(t) for t in tags)


def _unique(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        if item and item not in seen:
            seen[item] = None
    return list(seen)[:MAX_TAGS]


def merge_hashtags(from_text: Sequence[str], from_field: Sequence[str]) -> list[str]:
    """Hashtags of a post: those in its text first, then its ``tags`` field, de-duplicated."""
    return _unique([*from_text, *normalize_hashtags(from_field)])


# --------------------------------------------------------------------------- content hash


def media_identity(item: MediaItem) -> str:
    """What makes two media items "the same": the bytes' hash, the path, or the URL.

    Raises ValueError when inline data is not valid base64.
    """
    if item.data_base64:
        return f"{item.kind}:sha256:{hashlib.sha256(item.inline_bytes()).hexdigest()}"
    if item.path:
        return f"{item.kind}:path:{posixpath.normpath(item.path.replace(os.sep, '/'))}"
    url = (item.url or "").split("#", 1)[0]
    return f"{item.kind}:url:{url}"


def content_hash(text: str, hashtags: Sequence[str], media: Sequence[MediaItem]) -> str:
    """SHA-256 over the normalised text, the hashtags (as a set) and the media identities.

    Two posts with the same hash are exact reposts: same words (case-folded,
    whitespace-squeezed), same topics, same media in the same order.
    """
    canonical = {
        "t": squeeze_whitespace(text).casefold(),
        "h": sorted(set(hashtags)),
        "m": [media_identity(m) for m in media],
    }
    blob = json.dumps(canonical, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    # Posts refuse lone surrogates; other callers' text hashes too instead of raising.
    return hashlib.sha256(blob.encode("utf-8", errors="surrogatepass")).hexdigest()


def embedding_text(clean: str, hashtags: Sequence[str]) -> str:
    """The string the text encoder sees: the clean text plus hashtags not already in it."""
    lowered = clean.casefold()
    extra = [t for t in hashtags if t not in lowered]
    return squeeze_whitespace(" ".join([clean, *extra]))
