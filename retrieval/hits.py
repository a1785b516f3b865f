"""From index hits to posts: one hit per post, and the row that stands for a post.

What the API's search, its tag suggestions and the stream's suggest step share: a
post has a text row and media rows (videos with moment rows), so a search
oversamples rows and keeps each post once, at its best item.
"""

from __future__ import annotations

from collections.abc import Sequence

from crossfeed.core.schema import MAX_MEDIA
from crossfeed.encoders.moments import MAX_MOMENTS
from crossfeed.indexer.base import Hit, IndexRow, SearchFilter, VectorIndex
from crossfeed.retrieval.exceptions import ModelVersionMismatchError, PostNotIndexedError

# A post has at most one text row and MAX_MEDIA media rows, each video with its moments.
ROWS_PER_POST = 1 + MAX_MEDIA * (1 + MAX_MOMENTS)
# First try: 3 rows per wanted post covers the usual text+image post; only when the
# dedupe leaves fewer than top_k posts is the search repeated with the worst case.
OVERSAMPLE = 3
MAX_FETCH = 16_384  # Milvus' topk cap


def best_per_post(hits: Sequence[Hit], top_k: int) -> list[Hit]:
    """Deduplicate hits per post.

    Rule: a post appears at most once, represented by its highest-scoring item
    (ties: the lower item number, i.e. text before media); posts are ordered by
    that score, best first, and at most ``top_k`` are kept.
    """

    def order(h: Hit) -> tuple[float, str, int, int]:
        moment = -1 if h.row.moment is None else h.row.moment  # the whole video first
        return (-h.score, h.row.post_id, h.row.item, moment)

    ranked = sorted(hits, key=order)
    seen: set[str] = set()
    best: list[Hit] = []
    for hit in ranked:
        if hit.row.post_id in seen:
            continue
        seen.add(hit.row.post_id)
        best.append(hit)
        if len(best) == top_k:
            break
    return best


def collect_hits(
    index: VectorIndex,
    vector: Sequence[float],
    top_k: int,
    flt: SearchFilter,
    *,
    fence: int | None = None,
) -> list[Hit]:
    """``top_k`` distinct posts, oversampling rows since one post may hold several.

    ``fence``: see :meth:`VectorIndex.search` (the rows of every write before it are seen).
    """
    fetch = min(top_k * OVERSAMPLE, MAX_FETCH)
    # The fence only when there is one: indexes written before fences keep working.
    extra = {"fence": fence} if fence is not None else {}
    hits = index.search(vector, fetch, flt, **extra)
    best = best_per_post(hits, top_k)
    worst_case = min(top_k * ROWS_PER_POST, MAX_FETCH)
    if len(best) < top_k and len(hits) == fetch and fetch < worst_case:
        hits = index.search(vector, worst_case, flt, **extra)
        best = best_per_post(hits, top_k)
    return best


def query_row_for_post(
    rows: Sequence[IndexRow], post_id: str, model_version: str, *, prefer_media: bool = False
) -> IndexRow:
    """The stored row whose vector stands for a post: its text, else its first media item
    (its first media item, else its text, with ``prefer_media``).

    Only rows from the serving model version qualify: another version's vectors
    live in another space and would rank noise.
    """
    if not rows:
        raise PostNotIndexedError(f"post {post_id!r} is not in the index")
    usable = [
        r
        for r in rows
        if r.model_version == model_version and len(r.vector) > 0 and r.moment is None
    ]
    if not usable:
        versions = sorted({r.model_version for r in rows})
        raise ModelVersionMismatchError(
            f"post {post_id!r} was indexed with model version(s) {versions}; "
            f"the API serves {model_version!r}"
        )
    preferred = [r for r in usable if (r.modality != "text") == prefer_media]
    return min(preferred or usable, key=lambda r: r.item)
