"""The vector-index interface: idempotent upserts, filtered search, lookup by post.

Filters are structured (:class:`SearchFilter`), never raw expression strings from
users: each implementation builds its own query language from validated fields.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class IndexRow:
    """One stored vector: an item (text, image or video) of one post."""

    row_id: str  # "<post_id>:<modality>:<item>[:m<moment>]", the primary key
    post_id: str
    item: int
    modality: str  # "text" | "image" | "video"
    vector: Sequence[float]
    created_at_ms: int  # post time, epoch milliseconds (UTC)
    author: str
    text: str
    tags: Sequence[str]
    lang: str
    model_version: str
    media_ref: str
    suggested_tags: Sequence[str] = ()  # machine-proposed tags (media of untagged posts)
    moment: int | None = None  # a video moment's number; None for a whole item
    start_ms: int | None = None  # the moment's span in the video, milliseconds
    end_ms: int | None = None
    source: str = ""  # where the post came from ("bluesky", "mastodon", "clipart"...)


@dataclass(frozen=True)
class SearchFilter:
    modalities: Sequence[str] = ()  # empty = all
    since_ms: int | None = None  # inclusive
    until_ms: int | None = None  # exclusive
    tags: Sequence[str] = ()  # any of these tags
    lang: str | None = None
    sources: Sequence[str] = ()  # any of these sources (exact match)
    authors: Sequence[str] = ()  # any of these authors (exact match)
    exclude_post_ids: Sequence[str] = field(default_factory=tuple)
    # Only rows of these posts (a trend-scoped search); None = any post. Never empty.
    post_ids: Sequence[str] | None = None
    # Only rows embedded by this model version: vectors of different versions live in
    # different spaces, so mixing them would rank noise. None = any version.
    model_version: str | None = None

    def narrows(self) -> bool:
        """Whether it passes only part of a collection's rows (the model version and
        excluded ids do not count: a collection holds one version, exclusions are few).
        A graph index needs a wider search to find the rows such a filter keeps."""
        return bool(
            self.modalities
            or self.since_ms is not None
            or self.until_ms is not None
            or self.tags
            or self.lang
            or self.sources
            or self.authors
            or self.post_ids is not None
        )


@dataclass(frozen=True)
class Hit:
    row: IndexRow  # vector may be empty in hits
    score: float  # cosine similarity, higher is closer


class VectorIndex(ABC):
    @abstractmethod
    def ensure_ready(self, dim: int) -> None:
        """Create the collection and index if missing, and load it for search."""

    @abstractmethod
    def upsert(self, rows: Sequence[IndexRow]) -> int:
        """Insert or replace rows by ``row_id``; returns how many were written."""

    @abstractmethod
    def search(
        self, vector: Sequence[float], top_k: int, flt: SearchFilter, *, fence: int | None = None
    ) -> list[Hit]:
        """Nearest rows to a unit ``vector``, best first.

        ``fence``: a :meth:`write_fence` value; the search then sees at least every write
        made before it (the engine waits for them), whatever its default staleness.
        """

    def write_fence(self) -> int | None:
        """A token covering every write this object made so far (None: reads are always
        current, no fence needed). Index workers publish it with the cache epoch."""
        return None

    @abstractmethod
    def get_post(self, post_id: str) -> list[IndexRow]:
        """Every stored row of one post (vectors included)."""

    @abstractmethod
    def delete_posts(self, post_ids: Sequence[str]) -> int:
        """Remove every row of these posts (erasure); returns how many were removed."""

    @abstractmethod
    def count(self) -> int:
        """Number of rows stored."""

    @abstractmethod
    def ping(self) -> bool:
        """True when the engine answers."""

    def readiness(self) -> str | None:
        """None when a search can be answered now; otherwise why not (for ``/readyz``)."""
        return None if self.ping() else "does not answer"

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
