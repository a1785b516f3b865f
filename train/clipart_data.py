"""Data of ``crossfeed eval clipart``: corpus, split, features, tags, relevance.

The corpus is the sample stream of ``crossfeed corpus`` (clip art posts with
noisy captions and hashtags; every post records its ground-truth category in
``metadata``). It is split by source picture with
:func:`~crossfeed.corpus.io.split_posts`, so no picture (nor a video made
of it, nor a repost of it) is on both sides. Reposts are dropped from the test
side: the stream indexes the original only, and a repost query would find its
own picture. Relevance is the top-level category; it is read for scoring only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crossfeed.core.schema import Post
from crossfeed.encoders.exceptions import TrainingError

if TYPE_CHECKING:
    from crossfeed.encoders.model import SharedSpaceEmbedder
    from crossfeed.train.train_data import TrainingData

log = logging.getLogger(__name__)

DEFAULT_TEST_FRACTION = 0.2


@dataclass
class ClipartSplit:
    """Training rows, the test gallery (media) and test queries (texts), with categories."""

    posts: dict[str, Post]
    train: TrainingData
    gallery: TrainingData  # one row per test media item
    queries: TrainingData  # one row per test post (its first media row's text)
    categories: list[str]  # sorted top-level categories of the corpus
    gallery_labels: np.ndarray  # (n_gallery,) category ids
    query_labels: np.ndarray  # (n_queries,) category ids
    topic_words: list[str]  # one query text per category, as a user would type it
    n_reposts_dropped: int
    posts_path: Path
    media_roots: list[Path]

    def true_tags(self, post_id: str) -> list[str]:
        """The held-out descriptive tags of a post, normalised (its ``relevant_tags``)."""
        from crossfeed.encoders.vocab import clean_tag

        meta = self.posts[post_id].metadata or {}
        tags = (clean_tag(str(t)) for t in meta.get("relevant_tags") or ())
        return list(dict.fromkeys(t for t in tags if t))


def top_category(post: Post) -> str:
    meta = post.metadata or {}
    value = meta.get("top_category")
    if not isinstance(value, str) or not value:
        raise TrainingError(f"post {post.id} has no metadata.top_category; not a clipart corpus")
    return value


def topic_word(category: str) -> str:
    """``"signs_and_symbols"`` -> ``"signs and symbols"``: the name as a user types it."""
    return " ".join(category.replace("_", " ").replace("-", " ").split())


def is_repost(post: Post) -> bool:
    return bool((post.metadata or {}).get("repost_of"))


def ensure_corpus(corpus_dir: Path | None, out_dir: Path, *, progress: bool) -> Path:
    """The corpus' ``posts.jsonl``: given, previously built under ``out_dir``, or built now."""
    from crossfeed.corpus.build import build_corpus, ensure_clipart
    from crossfeed.corpus.io import POSTS_FILE

    if corpus_dir is not None:
        path = Path(corpus_dir) / POSTS_FILE
        if not path.is_file():
            raise TrainingError(
                f"{corpus_dir} holds no {POSTS_FILE}; build it with crossfeed corpus"
            )
        return path
    built = out_dir / "corpus"
    if (built / POSTS_FILE).is_file():
        return built / POSTS_FILE
    log.info("building the clipart corpus (seed 0) under %s", built)
    return build_corpus(built, clipart_root=ensure_clipart(), seed=0, progress=progress).posts_path


def corpus_media_roots(posts_path: Path) -> list[Path]:
    """Media roots recorded in the corpus manifest, plus the corpus directory."""
    import json

    from crossfeed.corpus.io import MANIFEST_FILE

    roots = [posts_path.parent]
    manifest = posts_path.parent / MANIFEST_FILE
    if manifest.is_file():
        data: dict[str, Any] = json.loads(manifest.read_text(encoding="utf-8"))
        roots.extend(Path(p) for p in data.get("media_roots") or ())
    return roots


def load_split(
    posts_path: Path,
    embedder: SharedSpaceEmbedder,
    *,
    extra_media_roots: Sequence[Path] = (),
    cache_dir: Path,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    split_seed: int = 0,
    progress: bool = True,
) -> ClipartSplit:
    """Read, split and featurise the corpus (features are cached under ``cache_dir``)."""
    from crossfeed.corpus.io import read_posts, split_posts
    from crossfeed.train.train_data import load_training_pairs

    posts = list(read_posts(posts_path))
    train_posts, test_posts = split_posts(posts, test_fraction, split_seed)
    roots = [*corpus_media_roots(posts_path), *extra_media_roots]
    data = load_training_pairs(
        posts_path,
        posts,
        embedder,
        roots,
        cache_path=cache_dir / "media.features.npz",
        progress=progress,
    )
    by_id = {p.id: p for p in posts}
    return assemble_split(
        by_id,
        data,
        {p.id for p in train_posts},
        test_posts,
        sorted({top_category(p) for p in posts}),
        posts_path,
        roots,
    )


def validation_split(split: ClipartSplit, fraction: float, seed: int) -> ClipartSplit:
    """The same kind of split carved out of ``split``'s training side only.

    Its ``train`` (the fit part) and ``gallery``/``queries`` (the validation
    part) are rows of ``split.train``, split by source picture exactly as
    :func:`load_split` splits the corpus, reposts likewise dropped from the
    validation side; the test side of ``split`` is never touched, so choices
    made on it are honest.
    """
    from crossfeed.corpus.io import split_posts

    train_posts = [split.posts[pid] for pid in dict.fromkeys(split.train.post_ids)]
    fit_posts, val_posts = split_posts(train_posts, fraction, seed)
    return assemble_split(
        split.posts,
        split.train,
        {p.id for p in fit_posts},
        val_posts,
        split.categories,
        split.posts_path,
        split.media_roots,
        what="validation carve-out of train",
    )


def assemble_split(
    by_id: dict[str, Post],
    data: TrainingData,
    train_ids: set[str],
    test_posts: Sequence[Post],
    categories: list[str],
    posts_path: Path,
    roots: list[Path],
    what: str = "clipart split",
) -> ClipartSplit:
    """Rows of ``data`` -> training rows, test gallery (no reposts) and one query per test post."""
    test_ids = {p.id for p in test_posts if not is_repost(p)}
    dropped = sum(is_repost(p) for p in test_posts)
    train_rows = [i for i, pid in enumerate(data.post_ids) if pid in train_ids]
    gallery_rows = [i for i, pid in enumerate(data.post_ids) if pid in test_ids]
    first_row: dict[str, int] = {}
    for i in gallery_rows:
        first_row.setdefault(data.post_ids[i], i)
    query_rows = list(first_row.values())
    if not train_rows or not gallery_rows:
        raise TrainingError("the split left no training or no test pairs")
    cat_id = {c: i for i, c in enumerate(categories)}
    gallery = data.subset(gallery_rows)
    queries = data.subset(query_rows)
    log.info(
        "%s: %d train pairs, %d test media, %d test queries, %d categories",
        what,
        len(train_rows),
        len(gallery),
        len(queries),
        len(categories),
    )
    return ClipartSplit(
        posts=by_id,
        train=data.subset(train_rows),
        gallery=gallery,
        queries=queries,
        categories=categories,
        gallery_labels=np.array([cat_id[top_category(by_id[p])] for p in gallery.post_ids]),
        query_labels=np.array([cat_id[top_category(by_id[p])] for p in queries.post_ids]),
        topic_words=[topic_word(c) for c in categories],
        n_reposts_dropped=dropped,
        posts_path=Path(posts_path),
        media_roots=roots,
    )
