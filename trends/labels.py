"""Words and tags that tell a cluster apart: tf-idf of its terms against the background.

Terms are a post's hashtags (``#tag``) and the content words of its clean text: lower
case, at least 3 letters, not a stop-word. Stop-words are English function words plus
the words every social post is full of (``look``, ``lol``, ``omg``...): they would label
every cluster alike.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

STOP_WORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "also",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "cannot",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "him",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "amp",
        "anyone",
        "bc",
        "best",
        "cant",
        "cute",
        "day",
        "dont",
        "else",
        "ever",
        "every",
        "everything",
        "found",
        "get",
        "got",
        "gonna",
        "honestly",
        "im",
        "incoming",
        "just",
        "know",
        "like",
        "lol",
        "look",
        "looking",
        "lowkey",
        "love",
        "loves",
        "made",
        "make",
        "me",
        "much",
        "need",
        "new",
        "ok",
        "omg",
        "pics",
        "pic",
        "post",
        "posting",
        "really",
        "rate",
        "share",
        "sooo",
        "soo",
        "stop",
        "tho",
        "thing",
        "thoughts",
        "today",
        "vibes",
        "watch",
        "wow",
        "yes",
        "yeah",
    ]
)
_WORD = re.compile(r"[a-z][a-z']{2,}")
MAX_WORDS = 8


def terms(text: str, hashtags: Iterable[str]) -> list[str]:
    """The label terms of one post: ``#tag`` per hashtag, then up to 8 content words."""
    out = [f"#{t}" for t in hashtags if t]
    seen: set[str] = set()
    for word in _WORD.findall(text.lower()):
        word = word.strip("'")
        if len(word) < 3 or word in STOP_WORDS or word in seen:
            continue
        seen.add(word)
        out.append(word)
        if len(seen) >= MAX_WORDS:
            break
    return out


def top_terms(cluster: Mapping[str, int], background: Mapping[str, int], n: int = 3) -> list[str]:
    """The ``n`` terms whose share in the cluster most exceeds their share overall."""
    total_c = sum(cluster.values()) or 1
    total_b = sum(background.values()) or 1
    scored = []
    for term, count in cluster.items():
        if count < 2 and len(cluster) > n:
            continue
        tf = count / total_c
        idf = math.log((total_b + 1) / (background.get(term, 0) + 1)) + 1.0
        scored.append((tf * idf, term))
    scored.sort(key=lambda s: (-s[0], s[1]))
    return [t for _, t in scored[:n]]


def label_of(cluster: Mapping[str, int], background: Mapping[str, int]) -> str:
    return " ".join(top_terms(cluster, background)) or "(no words)"
