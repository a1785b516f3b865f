"""Tag hygiene: from the noisy hashtags of social posts to a fixed tag vocabulary.

Hashtags are the only supervision the shared space gets, and they are messy:
``#StarStep``, ``#starstep`` and ``#star_step`` are one tag, ``#grapesleiflodahl``
is a one-off typo, ``#tbt`` says nothing about the picture. The vocabulary is
built in four deterministic steps:

1. **normalise** every tag with the stream's own :func:`~crossfeed.core.text.normalize_hashtag`
   (case folding, CamelCase and separators split, run-together words segmented
   with a unigram model), so training and serving agree on what a tag is;
2. drop tags that are too short or purely numeric (``#1``, ``#x``);
3. a **frequency floor**: a tag must appear on at least ``min_count`` posts
   (typos and one-offs cannot be learned, only memorised), and a **ceiling**
   on document frequency (a tag on most posts separates nothing);
4. a **vocabulary cap**: the ``max_size`` most frequent tags survive, ties
   broken alphabetically so the same posts always give the same vocabulary.

:meth:`TagVocab.transform` gives the ``(n, V)`` multi-hot matrix the
supervised objectives train on. A vocabulary is saved as ``tags.json`` next to
the head version it belongs to (a tag-posterior head's output dimensions are
the vocabulary's tags, in order).
"""

from __future__ import annotations

import json
import os
import secrets
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crossfeed.core.text import normalize_hashtag
from crossfeed.encoders.exceptions import HeadVersionError, TrainingError

TAGS_FILE = "tags.json"
VOCAB_FORMAT = 1


@dataclass(frozen=True)
class TagVocabConfig:
    """Hygiene thresholds.

    ``min_count`` 3: a tag seen on fewer posts is a typo or a one-off, and a
    classifier cannot generalise from two examples. ``max_df`` 0.5: a tag on
    more than half of the posts ranks nothing. ``max_size`` 512 keeps the
    output layer (and a tag-posterior space) small; the clipart corpus has
    ~300 tags above the floor. ``expand_words`` also counts each word of a
    multi-word tag as a tag (``"star step"`` -> ``"star"``, ``"step"``), which
    joins spellings that the segmenter split differently.
    """

    min_count: int = 3
    max_size: int = 512
    max_df: float = 0.5
    min_chars: int = 2
    expand_words: bool = False

    def __post_init__(self) -> None:
        if self.min_count < 1 or self.max_size < 1 or self.min_chars < 1:
            raise TrainingError("min_count, max_size and min_chars must be >= 1")
        if not 0.0 < self.max_df <= 1.0:
            raise TrainingError(f"max_df must be in (0, 1], got {self.max_df}")


def clean_tag(raw: str, min_chars: int = 2) -> str:
    """One raw tag -> its normalised form, or ``""`` when it is not a usable tag."""
    tag = normalize_hashtag(raw)
    if len(tag.replace(" ", "")) < min_chars or tag.replace(" ", "").isdigit():
        return ""
    return tag


class TagVocab:
    """A fitted, ordered tag vocabulary: ``tags[j]`` is column ``j`` of the label matrix."""

    def __init__(self, config: TagVocabConfig | None = None) -> None:
        self.config = config or TagVocabConfig()
        self.tags: list[str] = []
        self.counts: list[int] = []
        self.n_docs = 0
        self.topics: list[int] | None = None  # topic of each tag, see fit_topics()
        self.topic_names: list[str] = []  # the root tag naming each topic
        self._index: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.tags)

    def __contains__(self, tag: object) -> bool:
        return tag in self._index

    @property
    def fitted(self) -> bool:
        return bool(self.tags)

    def index(self, tag: str) -> int | None:
        """Column of an already normalised tag, or None when it is not in the vocabulary."""
        return self._index.get(tag)

    def normalize(self, raw_tags: Iterable[str]) -> list[str]:
        """Raw tags -> normalised, usable, deduplicated tags (not yet filtered by vocabulary)."""
        out: dict[str, None] = {}
        for raw in raw_tags:
            tag = clean_tag(raw, self.config.min_chars)
            if not tag:
                continue
            out[tag] = None
            if self.config.expand_words and " " in tag:
                for word in tag.split():
                    if len(word) >= max(3, self.config.min_chars) and not word.isdigit():
                        out[word] = None
        return list(out)

    def fit(self, tag_lists: Iterable[Sequence[str]]) -> TagVocab:
        """Count document frequencies of normalised tags and apply floor, ceiling and cap."""
        cfg = self.config
        df: Counter[str] = Counter()
        n_docs = 0
        for tags in tag_lists:
            n_docs += 1
            df.update(self.normalize(tags))
        if n_docs == 0:
            raise TrainingError("cannot fit a tag vocabulary on zero posts")
        ceiling = cfg.max_df * n_docs
        kept = [(t, c) for t, c in df.items() if c >= cfg.min_count and c <= ceiling]
        kept.sort(key=lambda tc: (-tc[1], tc[0]))
        kept = kept[: cfg.max_size]
        if not kept:
            raise TrainingError(
                f"no tag appears on >= {cfg.min_count} of {n_docs} posts; lower min_count"
            )
        self.tags = [t for t, _ in kept]
        self.counts = [c for _, c in kept]
        self.n_docs = n_docs
        self._index = {t: i for i, t in enumerate(self.tags)}
        return self

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise TrainingError("TagVocab used before fit()")

    def transform(self, tag_lists: Iterable[Sequence[str]]) -> np.ndarray:
        """Raw tag lists -> ``(n, V)`` float32 multi-hot matrix (unknown tags are dropped)."""
        self._require_fitted()
        rows: list[np.ndarray] = []
        for tags in tag_lists:
            row = np.zeros(len(self.tags), dtype=np.float32)
            for tag in self.normalize(tags):
                j = self._index.get(tag)
                if j is not None:
                    row[j] = 1.0
            rows.append(row)
        if not rows:
            return np.zeros((0, len(self.tags)), dtype=np.float32)
        return np.stack(rows)

    def fit_transform(self, tag_lists: Sequence[Sequence[str]]) -> np.ndarray:
        return self.fit(tag_lists).transform(tag_lists)

    @property
    def n_topics(self) -> int:
        return 0 if self.topics is None else max(self.topics) + 1

    def fit_topics(self, y: np.ndarray, threshold: float = 0.3) -> TagVocab:
        """Group tags into topics: the roots of a subsumption hierarchy of the tags.

        ``y`` is the ``(n, V)`` training matrix of :meth:`transform`. Tag ``t``
        *subsumes* tag ``s`` when ``t`` is more frequent and appears on at least
        ``threshold`` of the posts that carry ``s`` (Sanderson & Croft, SIGIR
        1999, the classic way to derive a concept hierarchy from co-occurrence);
        each tag's parent is its strongest subsumer, and its topic is the root
        reached by following parents (``#arrow`` -> ``#shapes``). Roots are
        the broad tags users add on top of specific ones, which is what a topic
        query means. Tags nobody subsumes (``#tbt``) are their own root.
        Deterministic: ties go to the more frequent, then earlier, tag.
        """
        self._require_fitted()
        y = np.asarray(y, dtype=np.float64)
        if y.ndim != 2 or y.shape[1] != len(self.tags):
            raise TrainingError(f"need an (n, {len(self.tags)}) tag matrix, got {y.shape}")
        if not 0.0 < threshold <= 1.0:
            raise TrainingError(f"subsumption threshold must be in (0, 1], got {threshold}")
        co = y.T @ y  # (V, V); the diagonal is each tag's own count
        df = np.diag(co).copy()
        cond = co / np.maximum(df[:, None], 1.0)  # cond[s, t] = P(t | s)
        n_tags = len(self.tags)
        parent = np.full(n_tags, -1)
        for s in range(n_tags):
            # Only more frequent tags (equal counts cannot subsume each other).
            cand = np.flatnonzero((df > df[s]) & (cond[s] >= threshold))
            if cand.size:
                parent[s] = int(cand[np.argmax(cond[s, cand])])
        root = np.arange(n_tags)
        for s in range(n_tags):
            r = s
            while parent[r] >= 0:  # parents are strictly more frequent: no cycles
                r = parent[r]
            root[s] = r
        ids = sorted(set(root.tolist()))  # roots in vocabulary (frequency) order
        index = {r: i for i, r in enumerate(ids)}
        self.topics = [index[int(r)] for r in root]
        self.topic_names = [self.tags[r] for r in ids]
        return self

    def topic_targets(self, y: np.ndarray) -> np.ndarray:
        """``(n, V)`` tags -> ``(n, K)`` 0/1: the post carries a tag of that topic."""
        if self.topics is None:
            raise TrainingError("no topics fitted; call fit_topics() first")
        onehot = np.eye(self.n_topics, dtype=np.float32)[np.asarray(self.topics)]  # (V, K)
        return (np.asarray(y, dtype=np.float32) @ onehot > 0).astype(np.float32)

    def decode(self, row: np.ndarray, top_k: int | None = None) -> list[tuple[str, float]]:
        """A ``(V,)`` score row -> ``[(tag, score), ...]`` best first (ties: vocabulary order)."""
        self._require_fitted()
        scores = np.asarray(row, dtype=np.float64).reshape(-1)
        if scores.shape[0] != len(self.tags):
            raise TrainingError(f"row has {scores.shape[0]} scores for {len(self.tags)} tags")
        order = np.argsort(-scores, kind="stable")
        if top_k is not None:
            order = order[:top_k]
        return [(self.tags[j], float(scores[j])) for j in order]

    # ------------------------------------------------------------- persistence

    def to_json(self) -> dict[str, Any]:
        self._require_fitted()
        return {
            "format": VOCAB_FORMAT,
            "config": asdict(self.config),
            "n_docs": self.n_docs,
            "tags": self.tags,
            "counts": self.counts,
            "topics": self.topics,
            "topic_names": self.topic_names,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TagVocab:
        try:
            if data.get("format") != VOCAB_FORMAT:
                raise ValueError(f"unsupported format {data.get('format')!r}")
            vocab = cls(TagVocabConfig(**data["config"]))
            tags = [str(t) for t in data["tags"]]
            counts = [int(c) for c in data["counts"]]
            if len(tags) != len(counts) or not tags or len(set(tags)) != len(tags):
                raise ValueError("tags and counts must be equally long, non-empty and unique")
            topics = data.get("topics")
            if topics is not None:
                topics = [int(t) for t in topics]
                if len(topics) != len(tags) or min(topics) < 0:
                    raise ValueError("topics must give one non-negative topic per tag")
        except (KeyError, TypeError, ValueError, TrainingError) as exc:
            raise HeadVersionError(f"malformed tag vocabulary: {exc}") from exc
        vocab.tags, vocab.counts, vocab.n_docs = tags, counts, int(data.get("n_docs", 0))
        vocab.topics = topics
        vocab.topic_names = [str(t) for t in data.get("topic_names") or ()]
        vocab._index = {t: i for i, t in enumerate(tags)}
        return vocab

    def save(self, path: Path) -> Path:
        """Write JSON atomically (temp file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: Path) -> TagVocab:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise HeadVersionError(f"cannot read tag vocabulary {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise HeadVersionError(f"tag vocabulary {path} is not a JSON object")
        return cls.from_json(data)
