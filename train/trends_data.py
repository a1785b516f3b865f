"""The stream of ``crossfeed eval trends``: sample-corpus background plus injected bursts.

Background: posts drawn from the sample corpus (clipart pictures, noisy captions and
tags; each post's text row embedded once per corpus and model version and cached) at
``rate_per_min`` on average, with a day-night swing (``diurnal``) and minute-to-minute
noise, from a pool of authors of very unequal activity, ~3% reposts of recent posts.
The first ``warmup_h`` hours build baselines; the next ``background_h`` hours carry
nothing injected (false alarms are counted there); then ``slots`` slots of ``slot_min``
minutes each start one burst of each kind:

- **hashtag**: a tag of the background rises to ``m`` x its own rate (m in 3-10) for
  10-30 minutes, on posts of any picture, from new authors;
- **meaning**: posts about one picture of one category (paraphrased captions made by
  the corpus' text generator, the picture's subject tags removed: no shared new hashtag)
  at ``m`` x that category's rate, from new authors;
- **spam**: one author posts the same tag (or the same picture) 100-300 times.

Everything is drawn from ``numpy.random.default_rng(seed)``; the paraphrase pool is
built once per corpus with a fixed seed, so seeds differ only in the stream.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from crossfeed.core.text import clean_text_and_hashtags, embedding_text, merge_hashtags
from crossfeed.trends.base import Observation
from crossfeed.trends.tracker import STOP_TAGS

if TYPE_CHECKING:
    from crossfeed.encoders.base import Embedder

log = logging.getLogger(__name__)

BurstKind = Literal["hashtag", "meaning", "spam"]
T0 = 1_735_689_600.0  # 2025-01-01T00:00Z, a window boundary
POOL_SEED = 20_240_101
EVENTS_PER_CATEGORY = 4
PARAPHRASES_PER_EVENT = 60


@dataclass(frozen=True)
class StreamParams:
    rate_per_min: float = 120.0
    diurnal: float = 0.35  # the rate swings +-35% over a day
    noise: float = 0.15  # minute-to-minute log-normal noise
    authors: int = 30_000
    repost_fraction: float = 0.03
    warmup_h: float = 2.0
    background_h: float = 24.0
    slots: int = 20
    slot_min: float = 45.0
    multiplier: tuple[float, float] = (3.0, 10.0)
    duration_min: tuple[float, float] = (10.0, 30.0)
    spam_posts: tuple[int, int] = (100, 300)
    min_tag_rate: float = 4.0  # burst tags and categories: at least this many posts/min
    seed: int = 0


@dataclass(frozen=True)
class Item:
    """One corpus post, cleaned as the normalize stage cleans it."""

    text: str
    hashtags: tuple[str, ...]
    row: int  # into EvalCorpus.vectors
    top_category: str
    media_ref: str | None


@dataclass
class EvalCorpus:
    items: list[Item]  # the background pool
    events: list[list[Item]]  # paraphrase pools, one per meaning event
    event_category: list[str]
    vectors: np.ndarray  # (n, dim) unit rows: items first, then paraphrases
    key: str  # corpus + model version (the cache key)
    # the background items each event's paraphrases were made from (one per event); a
    # head fitted for the eval leaves them out (:mod:`crossfeed.train.trends_space`)
    event_source: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Burst:
    index: int
    kind: BurstKind
    onset: float
    end: float
    target: str  # the tag, the event's category, or the spam's tag/picture
    multiplier: float
    posts: int = 0


@dataclass(frozen=True)
class Labelled:
    obs: Observation
    burst: int = -1  # index into Stream.bursts, -1 for background


@dataclass
class Stream:
    posts: list[Labelled]
    bursts: list[Burst]
    start: float
    background: tuple[float, float]  # event-time span with nothing injected (scored)
    params: StreamParams
    hours: float = field(default=0.0)


def _clean(text: str, tags: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    clean, text_tags = clean_text_and_hashtags(text)
    return clean, tuple(merge_hashtags(text_tags, list(tags)))


def _edits_within(a: str, b: str, limit: int) -> bool:
    """Whether ``a`` and ``b`` are at most ``limit`` insertions, deletions or
    substitutions apart (Levenshtein, banded)."""
    if abs(len(a) - len(b)) > limit:
        return False
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
        if min(cur) > limit:
            return False
        prev = cur
    return prev[-1] <= limit


def without_subject_tags(tags: Sequence[str], subject: Sequence[str]) -> tuple[str, ...]:
    """``tags`` (normalized) less every spelling of the subject: a tag sharing a word
    with it (``"police man"``), or its run-together form, typos included
    (``"policeman"``, ``"polcieman"``), so a meaning burst shares no new hashtag."""
    words = {w.lower() for w in subject}
    joined = "".join(w.lower() for w in subject)
    limit = 2 if len(joined) > 4 else 0  # the generator misspells tags of 5+ letters only
    out = []
    for t in tags:
        bare = t.replace(" ", "")
        if set(t.split()) & words or (joined and _edits_within(bare, joined, limit)):
            continue
        out.append(t)
    return tuple(out)


def load_corpus(posts_path: Path, cache_dir: Path, embedder: Embedder) -> EvalCorpus:
    """Corpus posts and the paraphrase pool, with their text rows (cached)."""
    from crossfeed.corpus.io import read_posts
    from crossfeed.corpus.text import make_handles, make_text

    posts = [p for p in read_posts(posts_path) if not (p.metadata or {}).get("repost_of")]
    items: list[Item] = []
    texts: list[str] = []
    for p in posts:
        clean, tags = _clean(p.text, p.tags)
        media = p.media[0].path if p.media else None
        top = str((p.metadata or {}).get("top_category", ""))
        items.append(Item(clean, tags, len(items), top, media))
        texts.append(embedding_text(clean, tags))
    rng = random.Random(POOL_SEED)
    handles = make_handles(rng, 50)
    by_cat: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_cat.setdefault(it.top_category, []).append(i)
    events: list[list[Item]] = []
    event_category: list[str] = []
    event_source: list[int] = []
    for cat in sorted(by_cat):
        if len(by_cat[cat]) < 0.01 * len(posts):
            continue
        for i in rng.sample(by_cat[cat], EVENTS_PER_CATEGORY):
            meta = posts[i].metadata or {}
            subject = tuple(str(meta.get("subject", "")).split())
            pool: list[Item] = []
            for _ in range(PARAPHRASES_PER_EVENT):
                pt = make_text(
                    rng,
                    subject=subject,
                    category_path=str(meta.get("category_path", cat)),
                    top_category=cat,
                    handles=handles,
                )
                clean, tags = _clean(pt.text, pt.tags)
                tags = without_subject_tags(tags, subject)
                pool.append(Item(clean, tags, len(texts), cat, items[i].media_ref))
                texts.append(embedding_text(clean, tags))
            events.append(pool)
            event_category.append(cat)
            event_source.append(i)
    digest = hashlib.sha256("\n".join(texts).encode("utf-8", "surrogatepass")).hexdigest()
    key = f"{digest[:16]}-{embedder.version}"
    path = cache_dir / f"vectors-{key}.npy"
    if path.exists():
        vectors = np.load(path)
        log.info("text rows from the cache %s", path)
    else:
        log.info("embedding %d texts (cached after this run)", len(texts))
        vectors = _embed(embedder, texts)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, vectors)
        tmp.replace(path)
    return EvalCorpus(items, events, event_category, vectors.astype(np.float32), key, event_source)


def _embed(embedder: Embedder, texts: list[str], chunk: int = 256) -> np.ndarray:
    from tqdm import tqdm

    out = []
    for i in tqdm(range(0, len(texts), chunk), desc="embed texts", unit="chunk", leave=False):
        out.append(np.asarray(embedder.embed_texts(texts[i : i + chunk]), dtype=np.float32))
    return np.concatenate(out)


class _Builder:
    def __init__(self, corpus: EvalCorpus, params: StreamParams) -> None:
        self.c = corpus
        self.p = params
        self.rng = np.random.default_rng(params.seed)
        ranks = np.arange(1, params.authors + 1, dtype=np.float64)
        w = 1.0 / ranks**0.8  # a few accounts post a lot, most rarely
        self.author_cdf = np.cumsum(w / w.sum())
        self.posts: list[Labelled] = []
        self.recent: list[Observation] = []
        self.n = 0

    def rate(self, t: float) -> float:
        """Background posts per minute at event time ``t`` (day-night swing)."""
        day = 2 * math.pi * ((t - T0) / 86_400.0)
        return self.p.rate_per_min * (1.0 + self.p.diurnal * math.sin(day - math.pi / 2))

    def obs(self, item: Item, author: str, t: float, extra_tag: str | None = None) -> Observation:
        self.n += 1
        tags = item.hashtags
        if extra_tag and extra_tag not in tags:
            tags = (*tags, extra_tag)
        return Observation(
            post_id=f"p{self.n:07d}",
            author=author,
            created_at=t,
            hashtags=tags,
            vector=self.c.vectors[item.row],
            text=item.text,
            media_ref=item.media_ref,
        )

    def background(self, start: float, end: float) -> None:
        rng, items = self.rng, self.c.items
        for minute in range(int((end - start) // 60)):
            t0 = start + minute * 60
            lam = self.rate(t0) * float(np.exp(rng.normal(0, self.p.noise)))
            times = np.sort(t0 + rng.random(rng.poisson(lam)) * 60)
            who = np.searchsorted(self.author_cdf, rng.random(len(times)))
            for t, a in zip(times, who, strict=True):
                author = f"u{int(a)}"
                if self.recent and rng.random() < self.p.repost_fraction:
                    orig = self.recent[int(rng.integers(len(self.recent)))]
                    self.n += 1
                    o = Observation(
                        f"p{self.n:07d}",
                        author,
                        float(t),
                        hashtags=orig.hashtags,
                        duplicate_of=orig.post_id,
                    )
                else:
                    o = self.obs(items[int(rng.integers(len(items)))], author, float(t))
                    self.recent.append(o)
                    if len(self.recent) > 2000:
                        del self.recent[:1000]
                self.posts.append(Labelled(o))

    def injected(self, k: int, start: float, end: float, per_min: float, make: object) -> int:
        """Poisson posts at ``per_min(t)`` between start and end, each from ``make``."""
        n = 0
        for minute in range(math.ceil((end - start) / 60)):
            t0 = start + minute * 60
            t1 = min(end, t0 + 60)
            lam = per_min * self.rate(t0) / self.p.rate_per_min * (t1 - t0) / 60
            for t in np.sort(t0 + self.rng.random(self.rng.poisson(lam)) * (t1 - t0)):
                self.posts.append(Labelled(make(float(t)), k))  # type: ignore[operator]
                n += 1
        return n


def build_stream(corpus: EvalCorpus, params: StreamParams) -> Stream:
    b = _Builder(corpus, params)
    rng, items = b.rng, corpus.items
    start = T0
    bg_from = start + params.warmup_h * 3600
    bg_to = bg_from + params.background_h * 3600
    end = bg_to + params.slots * params.slot_min * 60 + 3600
    b.background(start, end)

    n_items = len(items)
    tag_share = Counter(t for it in items for t in it.hashtags)
    tags = sorted(
        (
            t
            for t, n in tag_share.items()
            if t not in STOP_TAGS and n / n_items * params.rate_per_min >= params.min_tag_rate
        ),
        key=lambda t: (-tag_share[t], t),
    )
    cat_share = Counter(it.top_category for it in items)
    events = [
        i
        for i, c in enumerate(corpus.event_category)
        if cat_share[c] / n_items * params.rate_per_min >= params.min_tag_rate
    ]
    if not tags or not events:
        raise ValueError("the corpus has no tag or category frequent enough for bursts")
    tag_order = list(rng.permutation(tags))
    event_order = list(rng.permutation(events))
    bursts: list[Burst] = []
    for s in range(params.slots):
        slot = bg_to + s * params.slot_min * 60
        for kind in ("hashtag", "meaning", "spam"):
            k = len(bursts)
            onset = slot + float(rng.random()) * 10 * 60
            duration = float(rng.uniform(*params.duration_min)) * 60
            m = float(rng.uniform(*params.multiplier))
            if kind == "hashtag":
                tag = str(tag_order[s % len(tag_order)])
                base = tag_share[tag] / n_items * params.rate_per_min
                new_authors = iter(range(10**9))

                def make_tag(t: float, tag: str = tag, k: int = k, it=new_authors) -> Observation:
                    item = items[int(rng.integers(n_items))]
                    return b.obs(item, f"h{k}-{next(it)}", t, extra_tag=tag)

                n = b.injected(k, onset, onset + duration, (m - 1) * base, make_tag)
                bursts.append(Burst(k, "hashtag", onset, onset + duration, tag, m, n))
            elif kind == "meaning":
                ev = int(event_order[s % len(event_order)])
                cat = corpus.event_category[ev]
                base = cat_share[cat] / n_items * params.rate_per_min
                pool = corpus.events[ev]
                new_authors = iter(range(10**9))

                def make_ev(
                    t: float, pool: list[Item] = pool, k: int = k, it=new_authors
                ) -> Observation:
                    return b.obs(pool[int(rng.integers(len(pool)))], f"m{k}-{next(it)}", t)

                n = b.injected(k, onset, onset + duration, (m - 1) * base, make_ev)
                bursts.append(Burst(k, "meaning", onset, onset + duration, f"{cat}#{ev}", m, n))
            else:
                count = int(rng.integers(params.spam_posts[0], params.spam_posts[1] + 1))
                item = items[int(rng.integers(n_items))]
                spam_tag = f"deal{k}" if s % 2 == 0 else None
                times = np.sort(onset + rng.random(count) * duration)
                for t in times:
                    spam = b.obs(item, f"spammer{k}", float(t), extra_tag=spam_tag)
                    b.posts.append(Labelled(spam, k))
                target = f"#{spam_tag}" if spam_tag else f"picture {item.row}"
                bursts.append(Burst(k, "spam", onset, onset + duration, target, 1.0, count))
    b.posts.sort(key=lambda lp: (lp.obs.created_at, lp.obs.post_id))
    return Stream(b.posts, bursts, start, (bg_from, bg_to), params, (end - start) / 3600)
