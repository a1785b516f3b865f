"""Translation: propose tags for an untagged image or video from the shared space.

The survey's third challenge is translating one modality into another; for a
social feed the useful translation is media -> hashtags. Two sources of
evidence are combined:

* **neighbour voting**: the item's nearest indexed posts (any modality) each
  vote for their own tags, weighted by a softmax of their similarity, so a
  close neighbour counts far more than the 20th. A tag's vote is the weighted
  share of tagged neighbours that carry it, a number in [0, 1];
* **the head's tag posterior** (when the serving head version is a tag space):
  ``p(tag | media)`` straight from the image head, which also knows tags no
  neighbour happens to carry; the embedder computes it beside the vectors
  (:meth:`~crossfeed.encoders.base.Embedder.embed_media_with_posterior`).

``score = (1 - mix) * vote + mix * posterior``. Everything here is pure logic
over hits, so the API route, the stream's suggest step and the evaluation share
one implementation: :func:`serving_suggestions` is the serving recipe (from
neighbours and posterior to scored tags), :func:`suggest_tags_for_media` feeds
it from an index, and :func:`emitted_tags` is the stream step's ``min_score``
cut. The evaluation calls the first and the last with its own neighbours, so
it measures what is served.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass

from crossfeed.exceptions import InvalidInputError
from crossfeed.indexer.base import Hit, SearchFilter, VectorIndex

log = logging.getLogger(__name__)

# Fetch this many rows per wanted neighbour post: a post has a text row and
# usually one media row, both of which can be near the query.
_ROWS_PER_NEIGHBOUR = 3
MAX_NEIGHBOURS = 200
# Weight of the head's tag posterior against neighbour votes when both exist:
# on the clipart evaluation an even mix beat either source alone.
POSTERIOR_MIX = 0.5


@dataclass(frozen=True)
class Neighbour:
    """One neighbouring post: its best similarity to the query and its tags."""

    post_id: str
    score: float
    tags: tuple[str, ...]


@dataclass(frozen=True)
class TagSuggestion:
    tag: str
    score: float  # combined score in [0, 1]
    support: int  # how many neighbour posts carry the tag


@dataclass(frozen=True)
class VoteConfig:
    """How neighbours vote.

    ``neighbours`` 20 posts: enough for a tag shared by a category to show,
    few enough that the votes stay local. ``temperature`` 0.05 on the cosine
    scale: a neighbour 0.05 less similar than the best counts 1/e as much, so
    the ranking of neighbours matters, not just membership of the top 20.
    ``posterior_mix`` 0 = votes only (used when the head has no tag output).
    """

    neighbours: int = 20
    temperature: float = 0.05
    min_similarity: float = -1.0
    posterior_mix: float = 0.0

    def __post_init__(self) -> None:
        if not 1 <= self.neighbours <= MAX_NEIGHBOURS:
            raise InvalidInputError(f"neighbours must be in 1..{MAX_NEIGHBOURS}")
        if not self.temperature > 0:
            raise InvalidInputError("temperature must be positive")
        if not 0.0 <= self.posterior_mix <= 1.0:
            raise InvalidInputError("posterior_mix must be in [0, 1]")


def neighbours_from_hits(hits: Iterable[Hit], limit: int) -> list[Neighbour]:
    """Index hits -> at most ``limit`` distinct posts, each at its best score, best first."""
    scores: dict[str, float] = {}
    tags: dict[str, dict[str, None]] = {}
    for hit in hits:
        post = hit.row.post_id
        scores[post] = max(scores.get(post, -math.inf), float(hit.score))
        tags.setdefault(post, {}).update(dict.fromkeys(hit.row.tags))  # rows share the post's tags
    ranked = sorted(scores, key=lambda p: (-scores[p], p))[:limit]
    return [Neighbour(p, scores[p], tuple(tags[p])) for p in ranked]


def vote_tags(
    neighbours: Sequence[Neighbour],
    *,
    config: VoteConfig | None = None,
    posterior: Mapping[str, float] | None = None,
    allowed: Container[str] | None = None,
    exclude: Container[str] = (),
    top_k: int = 5,
) -> list[TagSuggestion]:
    """Similarity-weighted tag votes, optionally mixed with a tag posterior.

    Only neighbours that carry at least one tag vote (an untagged post says
    nothing about which tags are wrong). ``allowed`` restricts suggestions to
    a vocabulary (so one neighbour's typo is never proposed), ``exclude``
    removes tags (e.g. those the post already has). Ties: higher support,
    then alphabetical, so results are deterministic.
    """
    cfg = config or VoteConfig()
    if top_k < 1:
        raise InvalidInputError("top_k must be >= 1")
    voters = [n for n in neighbours[: cfg.neighbours] if n.tags and n.score >= cfg.min_similarity]
    votes: dict[str, float] = {}
    support: dict[str, int] = {}
    if voters:
        top = max(n.score for n in voters)
        weights = [math.exp((n.score - top) / cfg.temperature) for n in voters]
        total = sum(weights)
        for n, w in zip(voters, weights, strict=True):
            for tag in dict.fromkeys(n.tags):
                votes[tag] = votes.get(tag, 0.0) + w / total
                support[tag] = support.get(tag, 0) + 1
    mix = cfg.posterior_mix if posterior else 0.0
    if not voters and posterior:
        mix = 1.0  # nothing to vote with: the posterior alone
    candidates = set(votes) | (set(posterior) if posterior and mix > 0 else set())
    scored: list[TagSuggestion] = []
    for tag in candidates:
        if tag in exclude or (allowed is not None and tag not in allowed):
            continue
        p = float(posterior.get(tag, 0.0)) if posterior and mix > 0 else 0.0
        score = (1.0 - mix) * votes.get(tag, 0.0) + mix * p
        if score > 0:
            scored.append(TagSuggestion(tag, score, support.get(tag, 0)))
    scored.sort(key=lambda s: (-s.score, -s.support, s.tag))
    return scored[:top_k]


def _neighbours_of_vector(
    index: VectorIndex,
    vector: Sequence[float],
    *,
    model_version: str | None,
    limit: int,
    exclude_post_ids: Sequence[str],
) -> list[Neighbour]:
    """The ``limit`` nearest posts of ``model_version`` in ``index`` (one blocking search)."""
    flt = SearchFilter(model_version=model_version, exclude_post_ids=tuple(exclude_post_ids))
    hits = index.search(vector, limit * _ROWS_PER_NEIGHBOUR, flt)
    return neighbours_from_hits(hits, limit)


def suggest_tags_for_vector(
    index: VectorIndex,
    vector: Sequence[float],
    *,
    model_version: str | None,
    config: VoteConfig | None = None,
    posterior: Mapping[str, float] | None = None,
    allowed: Container[str] | None = None,
    exclude_post_ids: Sequence[str] = (),
    exclude_tags: Container[str] = (),
    top_k: int = 5,
) -> tuple[list[TagSuggestion], list[Neighbour]]:
    """Tags for one unit vector of the serving space, from its neighbours in ``index``.

    Only rows of ``model_version`` are neighbours (other versions live in
    other spaces). Returns the suggestions and the neighbours that voted, so
    a caller can show its evidence. Blocking (one index search).
    """
    cfg = config or VoteConfig()
    neighbours = _neighbours_of_vector(
        index,
        vector,
        model_version=model_version,
        limit=cfg.neighbours,
        exclude_post_ids=exclude_post_ids,
    )
    suggestions = vote_tags(
        neighbours,
        config=cfg,
        posterior=posterior,
        allowed=allowed,
        exclude=exclude_tags,
        top_k=top_k,
    )
    return suggestions, neighbours


def serving_suggestions(
    neighbours: Sequence[Neighbour],
    posterior: Mapping[str, float] | None = None,
    *,
    limit: int = 20,
    top_k: int = 5,
) -> list[TagSuggestion]:
    """The serving recipe: scored tags for one media item from its neighbours (best first).

    ``neighbours`` are the item's nearest posts, best first (only the first
    ``limit``, in 1..:data:`MAX_NEIGHBOURS`, vote); ``posterior`` is the head's
    ``p(tag | media)`` when the serving head is a tag space, else None or
    empty. Without a posterior: neighbour votes alone, any tag. With one: a
    :data:`POSTERIOR_MIX` mix of votes and posterior (read at call time), and
    only the posterior's vocabulary is suggested, so one neighbour's typo never
    wins. At most ``top_k`` suggestions, every score in (0, 1]. Pure; the API,
    the stream step (through :func:`suggest_tags_for_media`) and the
    evaluation all call it.
    """
    config = VoteConfig(neighbours=limit, posterior_mix=POSTERIOR_MIX if posterior else 0.0)
    return vote_tags(
        neighbours,
        config=config,
        posterior=posterior,
        allowed=frozenset(posterior) if posterior else None,
        top_k=top_k,
    )


def suggest_tags_for_media(
    index: VectorIndex,
    vector: Sequence[float],
    *,
    model_version: str | None,
    posterior: Mapping[str, float] | None = None,
    neighbours: int = 20,
    exclude_post_ids: Sequence[str] = (),
    top_k: int = 5,
) -> tuple[list[TagSuggestion], list[Neighbour]]:
    """The serving recipe for one media vector, fed from ``index`` (used by the API and stream).

    Searches the ``neighbours`` nearest posts of ``model_version`` (never
    those of ``exclude_post_ids``) and scores them with
    :func:`serving_suggestions`. Returns the suggestions and the neighbours
    that voted. Blocking (one index search).
    """
    VoteConfig(neighbours=neighbours)  # a bad count fails before the search, not after
    found = _neighbours_of_vector(
        index,
        vector,
        model_version=model_version,
        limit=neighbours,
        exclude_post_ids=exclude_post_ids,
    )
    return serving_suggestions(found, posterior, limit=neighbours, top_k=top_k), found


def emitted_tags(suggestions: Iterable[TagSuggestion], min_score: float) -> list[str]:
    """The tags the stream step emits: those scored at least ``min_score``, in the given order.

    The stream's translation step (``StreamSettings.suggest_min_score``) and
    the evaluation that chooses that threshold both cut with this.
    """
    return [s.tag for s in suggestions if s.score >= min_score]


def precision_at_k(
    suggested: Sequence[Sequence[str]], truth: Sequence[Iterable[str]], k: int = 5
) -> float:
    """Mean over items with any true tag of ``|top-k suggestions ∩ truth| / k``."""
    if len(suggested) != len(truth):
        raise InvalidInputError("one suggestion list per item is needed")
    values: list[float] = []
    for tags, true in zip(suggested, truth, strict=True):
        true_set = set(true)
        if not true_set:
            continue
        values.append(len(set(list(tags)[:k]) & true_set) / k)
    return float(sum(values) / len(values)) if values else float("nan")
