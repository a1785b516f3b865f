"""Informal, noisy post text and hashtags, the way people actually write them.

The point is to exercise the cleaning stage and the text encoder with what a social
feed looks like: casual templates, typos, elongated words, emoji, @mentions, links,
hashtags as ``#CamelCase`` or ``#runtogether``, posts without any tag, and tags that
say nothing about the picture (``#tbt``). All randomness comes from the ``random.Random``
passed in, so a seed reproduces the corpus exactly.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

from crossfeed.corpus.source import category_words, singular

_TEMPLATES = (
    "omg look at this {thing} {emoji}",
    "sooo cute {emoji}",
    "new {thing} just dropped!!",
    "can't stop looking at this {thing} lol",
    "who else loves {thing}s? {emoji}",
    "my {thing} collection keeps growing {emoji}",
    "ok but this {thing} tho",
    "found this {thing} today, thoughts?",
    "{thing} of the day {emoji}",
    "not me posting another {thing}",
    "this {thing} is everything {emoji}",
    "anyone know where this {thing} is from?",
    "made my day: {thing} {emoji}",
    "{thing} vibes only",
    "throwback to this {thing}",
    "rate this {thing} 1-10",
    "need this {thing} in my life {emoji}",
    "honestly the best {thing} ever",
    "{thing} appreciation post {emoji}",
    "petition to make {thing}s a thing again",
    "lowkey obsessed with this {thing}",
    "cannot believe this {thing} exists",
    "just a {thing}. that's the post.",
    "{cat} content incoming {emoji}",
    "more {cat} pics bc why not",
)
_VIDEO_TEMPLATES = (
    "quick {cat} compilation {emoji}",
    "{cat} slideshow, watch till the end!!",
    "made a lil video of my {cat} pics {emoji}",
    "{thing} and friends, a short film",
    "pov: your feed is all {cat} {emoji}",
)
_GENERIC_EMOJI = ("😍", "🔥", "✨", "💯", "😂", "🙌", "❤️", "👀", "🤩", "😭", "👍", "🥺")
_TOP_EMOJI = {
    "animals": ("🐾", "🐶", "🐱", "🐦", "🦋"),
    "food": ("🍕", "🍎", "🍰", "🍔", "☕"),
    "plants": ("🌸", "🌿", "🌻", "🌳"),
    "transportation": ("🚗", "✈️", "🚲", "🚢"),
    "computer": ("💻", "🖥️", "⌨️", "🖱️"),
    "people": ("🧑", "👋", "😊"),
    "recreation": ("⚽", "🎮", "🎸", "🎲"),
    "geography": ("🌍", "🗺️", "🏔️"),
    "buildings": ("🏠", "🏰", "🏙️"),
    "science": ("🔬", "🧪", "🪐"),
    "signs_and_symbols": ("⚠️", "🚩", "➡️"),
    "shapes": ("⭐", "🔷", "🔺"),
    "symbols": ("⭐", "➡️"),
    "tools": ("🔧", "🔨", "🪛"),
    "office": ("📎", "📁", "✏️"),
}
IRRELEVANT_TAGS = (
    "tbt",
    "mood",
    "nofilter",
    "instagood",
    "photooftheday",
    "love",
    "vibes",
    "fyp",
    "weekend",
    "art",
    "follow4follow",
    "blessed",
)
_URL_PREFIXES = ("https://t.co/", "https://bit.ly/", "https://example.com/p/")
_HANDLE_A = ("sunny", "lazy", "tiny", "happy", "grumpy", "cosmic", "retro", "pixel", "wild")
_HANDLE_B = ("otter", "panda", "fox", "koala", "llama", "cactus", "taco", "robot", "comet")


@dataclass(frozen=True)
class PostText:
    """What a caption generator produced, plus the facts an evaluation may want."""

    text: str
    tags: list[str]  # the post's tag field, without '#', as the "client" sent it
    relevant_tags: list[str]  # normalised (lower-case, run-together) descriptive tags used
    irrelevant_tags: list[str]


def make_handles(rng: random.Random, count: int) -> list[str]:
    """``count`` distinct, plausible user handles."""
    handles: list[str] = []
    seen: set[str] = set()
    while len(handles) < count:
        handle = f"{rng.choice(_HANDLE_A)}_{rng.choice(_HANDLE_B)}{rng.randint(1, 999)}"
        if handle not in seen:
            seen.add(handle)
            handles.append(handle)
    return handles


def _typo(rng: random.Random, word: str) -> str:
    i = rng.randrange(1, len(word) - 1)
    kind = rng.random()
    if kind < 0.4:  # swap two neighbours
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind < 0.75:  # drop one
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i] + word[i:]  # double one


def _elongate(rng: random.Random, word: str) -> str:
    vowels = [i for i, c in enumerate(word) if c in "aeiouy"]
    if not vowels:
        return word
    i = vowels[-1]
    return word[: i + 1] + word[i] * rng.randint(2, 4) + word[i + 1 :]


def _add_noise(rng: random.Random, text: str) -> str:
    words = text.split(" ")
    if rng.random() < 0.35:
        words = [
            _typo(rng, w) if w.isalpha() and len(w) >= 4 and rng.random() < 0.2 else w
            for w in words
        ]
    if rng.random() < 0.2:
        candidates = [i for i, w in enumerate(words) if w.isalpha() and len(w) >= 3]
        if candidates:
            i = rng.choice(candidates)
            words[i] = _elongate(rng, words[i])
    text = " ".join(words)
    case = rng.random()
    if case < 0.08:
        text = text.upper()
    elif case < 0.3:
        text = text.lower()
    elif case < 0.5:
        text = text[:1].upper() + text[1:]
    return text


def _camel(words: list[str]) -> str:
    return "".join(w[:1].upper() + w[1:] for w in words)


def _tag_forms(rng: random.Random, words: list[str]) -> str:
    """One hashtag spelling of a phrase: CamelCase, runtogether, Capitalised or snake."""
    roll = rng.random()
    if roll < 0.4:
        return _camel(words)
    if roll < 0.75:
        return "".join(words)
    if roll < 0.9:
        return "".join(words).capitalize()
    return "_".join(words)


def _emoji(rng: random.Random, top_category: str) -> str:
    pool = _TOP_EMOJI.get(top_category, ()) + _GENERIC_EMOJI
    count = rng.choice((0, 1, 1, 2, 3))
    if count == 0:
        return ""
    if rng.random() < 0.3:  # the same emoji, repeated, as people do
        return rng.choice(pool) * (count + 1)
    return "".join(rng.choice(pool) for _ in range(count))


def make_text(
    rng: random.Random,
    *,
    subject: tuple[str, ...],
    category_path: str,
    top_category: str,
    handles: list[str],
    video: bool = False,
) -> PostText:
    """A noisy caption and tags about a picture (or a video) of ``category_path``."""
    cat_words = category_words(category_path) or [top_category]
    leaf = singular(cat_words[-1])
    thing = " ".join(subject) if subject and rng.random() < 0.85 else leaf
    templates = _VIDEO_TEMPLATES if video else _TEMPLATES
    text = rng.choice(templates).format(thing=thing, cat=leaf, emoji=_emoji(rng, top_category))
    text = _add_noise(rng, " ".join(text.split()))
    if rng.random() < 0.2:
        mention = "@" + rng.choice(handles)
        text = f"{mention} {text}" if rng.random() < 0.5 else f"{text} cc {mention}"
    if rng.random() < 0.15:
        slug = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(10))
        text = f"{text} {rng.choice(_URL_PREFIXES)}{slug}"

    # Descriptive tags: the subject, the leaf category, the top category.
    phrases: list[list[str]] = []
    if subject:
        phrases.append(list(subject))
    phrases.append([leaf])
    top_words = category_words(top_category)
    if top_words and top_words != [leaf]:
        phrases.append(top_words)
    missing = rng.random() < 0.15
    relevant: list[str] = []
    spelled: list[str] = []
    if not missing:
        count = rng.randint(1, len(phrases))
        for words in rng.sample(phrases, count):
            tag = _tag_forms(rng, words)
            if len(tag) > 4 and rng.random() < 0.07:
                tag = _typo(rng, tag)
            spelled.append(tag)
            relevant.append("".join(words))
    irrelevant = rng.sample(IRRELEVANT_TAGS, rng.randint(1, 2)) if rng.random() < 0.3 else []
    all_tags = spelled + irrelevant
    rng.shuffle(all_tags)

    placement = rng.random()
    tag_field: list[str] = []
    if all_tags:
        if placement < 0.4:  # only in the text
            text = f"{text} " + " ".join(f"#{t}" for t in all_tags)
        elif placement < 0.8:  # only in the tag field
            tag_field = all_tags
        else:  # both, as some clients do
            text = f"{text} " + " ".join(f"#{t}" for t in all_tags)
            tag_field = list(all_tags)
    return PostText(
        text=text.strip(), tags=tag_field, relevant_tags=relevant, irrelevant_tags=irrelevant
    )
