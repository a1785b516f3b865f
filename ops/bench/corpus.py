"""The sample corpus the benches feed through the encoders, the pipeline and the API.

Built with :func:`crossfeed.corpus.build.build_corpus` (clipart pictures, ~10% short
slideshow videos), without reposts: a repost is dropped by the dedupe stage, so it
would make "rows expected" depend on dedupe rather than on throughput. The corpus
is cached under the bench output directory and reused when its options match,
since building the videos costs more CPU than some benches themselves.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from crossfeed.core.schema import Post
from crossfeed.corpus.build import CorpusResult

log = logging.getLogger(__name__)


def _options(limit: int, video_fraction: float) -> dict[str, object]:
    return {"limit": limit, "video_fraction": video_fraction, "repost_fraction": 0.0}


def bench_corpus(
    out_dir: Path,
    *,
    limit: int,
    seed: int = 0,
    video_fraction: float = 0.1,
    progress: bool = True,
) -> CorpusResult:
    """A corpus of ``limit`` pictures (+ videos) under ``out_dir/corpus``, built once."""
    from crossfeed.corpus.build import build_corpus, ensure_clipart
    from crossfeed.corpus.io import MANIFEST_FILE, POSTS_FILE, read_posts

    if limit < 1:
        raise ValueError("the bench corpus needs at least one picture")
    target = Path(out_dir) / "corpus" / f"limit{limit}-seed{seed}-video{video_fraction:g}"
    manifest_path, posts_path = target / MANIFEST_FILE, target / POSTS_FILE
    if manifest_path.is_file() and posts_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            options = manifest.get("options", {})
            wanted = _options(limit, video_fraction)
            if manifest.get("seed") == seed and all(options.get(k) == v for k, v in wanted.items()):
                posts = list(read_posts(posts_path))
                if posts and all(_media_present(p) for p in posts):
                    log.info("reusing the bench corpus in %s", target)
                    return CorpusResult(target, posts_path, manifest_path, manifest, posts)
        except (OSError, ValueError) as exc:
            log.info("rebuilding the bench corpus (%s)", exc)
    root = ensure_clipart(allow_install=False)
    return build_corpus(
        target,
        clipart_root=root,
        limit=limit,
        seed=seed,
        video_fraction=video_fraction,
        repost_fraction=0.0,
        progress=progress,
    )


def _media_present(post: Post) -> bool:
    return all(m.path is None or Path(m.path).is_file() for m in post.media)


def modality(post: Post) -> str:
    """``video``/``image`` for a post with such media, else ``text``."""
    kinds = {m.kind for m in post.media}
    if "video" in kinds:
        return "video"
    if "image" in kinds:
        return "image"
    return "text"


def stream_view(post: Post) -> tuple[str, int]:
    """``(content hash, rows stored)`` of ``post`` as the normalize stage will see it.

    Computed with the stream's own cleaning functions, so the bench knows exactly
    which posts the dedupe stage drops and how many rows each of the others yields
    (one for the cleaned text and hashtags, if any are left, plus one per media item).
    """
    from crossfeed.core.text import clean_text_and_hashtags, content_hash, merge_hashtags

    text, text_tags = clean_text_and_hashtags(post.text)
    hashtags = merge_hashtags(text_tags, post.tags)
    rows = (1 if text or hashtags else 0) + len(post.media)
    return content_hash(text, hashtags, post.media), rows


def expected_rows(post: Post) -> int:
    """Rows the index stores for ``post`` (see :func:`stream_view`)."""
    return stream_view(post)[1]


def unique_posts(posts: list[Post], seen: set[str]) -> list[Post]:
    """``posts`` minus reposts of anything in ``seen`` (updated) and posts with no rows.

    The pipeline indexes neither, so leaving them in would make a bench wait for rows
    that never come.
    """
    out = []
    for post in posts:
        digest, rows = stream_view(post)
        if rows and digest not in seen:
            seen.add(digest)
            out.append(post)
    return out
