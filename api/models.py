"""Request and response bodies of the HTTP API (storage rows live in the indexer).

Request models forbid unknown fields, so a misspelt filter is an error instead of
being silently ignored; every string has a length bound.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from crossfeed.core.schema import MAX_ID_CHARS, MAX_TAGS, MAX_TEXT_CHARS
from crossfeed.core.text import normalize_hashtag
from crossfeed.indexer.base import SearchFilter

Modality = Literal["text", "image", "video"]
QueryKind = Literal["text", "image", "post"]

MAX_TAG_CHARS = 100
# BCP 47-ish: "en", "pt-BR", "zh-Hant". Stored values are compared exactly.
_LANG_PATTERN = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$"

Tag = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TAG_CHARS)]


def _no_control_chars(value: str, what: str) -> str:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError(f"{what} contains control characters")
    return value


def to_epoch_ms(value: datetime) -> int:
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return int(aware.timestamp() * 1000)


class SearchFilters(BaseModel):
    """Optional restrictions; all given ones must hold (tags: any of them)."""

    model_config = ConfigDict(extra="forbid")

    modalities: list[Modality] = Field(default_factory=list, max_length=3)
    since: datetime | None = Field(default=None, description="inclusive, ISO-8601")
    until: datetime | None = Field(default=None, description="exclusive, ISO-8601")
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    lang: str | None = Field(default=None, max_length=16, pattern=_LANG_PATTERN)

    @field_validator("since", "until")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return None
        return v if v.tzinfo else v.replace(tzinfo=UTC)

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        out: list[str] = []
        for raw in v:
            # Stored tags are the stream's normalised hashtags: compare like with like.
            tag = normalize_hashtag(_no_control_chars(raw, "tag"))
            if not tag:
                raise ValueError(f"tag {raw!r} is empty once normalised")
            if tag not in out:
                out.append(tag)
        return out

    @model_validator(mode="after")
    def _range(self) -> SearchFilters:
        if self.since and self.until and self.since >= self.until:
            raise ValueError("since must be earlier than until")
        return self

    def to_index_filter(
        self, *, model_version: str | None, exclude_post_ids: tuple[str, ...] = ()
    ) -> SearchFilter:
        return SearchFilter(
            modalities=tuple(dict.fromkeys(self.modalities)),
            since_ms=to_epoch_ms(self.since) if self.since else None,
            until_ms=to_epoch_ms(self.until) if self.until else None,
            tags=tuple(self.tags),
            lang=self.lang,
            exclude_post_ids=exclude_post_ids,
            model_version=model_version,
        )

    def canonical(self) -> dict[str, Any]:
        """An order-independent form for cache keys."""
        return {
            "modalities": sorted(set(self.modalities)),
            "since": to_epoch_ms(self.since) if self.since else None,
            "until": to_epoch_ms(self.until) if self.until else None,
            "tags": sorted(self.tags),
            "lang": self.lang,
        }


class SearchRequest(BaseModel):
    """JSON search body: exactly one of ``text`` and ``post_id``."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT_CHARS)
    post_id: str | None = Field(default=None, min_length=1, max_length=MAX_ID_CHARS)
    filters: SearchFilters = Field(default_factory=SearchFilters)
    top_k: int = Field(default=10, ge=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> SearchRequest:
        if (self.text is None) == (self.post_id is None):
            raise ValueError("give exactly one of 'text' and 'post_id'")
        if self.text is not None and not self.text.strip():
            raise ValueError("text is blank")
        if self.post_id is not None:
            _no_control_chars(self.post_id, "post_id")
        return self


class MomentSpan(BaseModel):
    """Where in a video a hit is: one of its moments (see encoders/moments.py)."""

    index: int = Field(description="the moment's number in the video, from 0")
    start_s: float
    end_s: float


class SearchResult(BaseModel):
    id: str = Field(description="post id")
    score: float = Field(description="cosine similarity of the post's best item")
    modality: Modality | str
    item: int = Field(description="which item of the post matched (0 = text)")
    text: str
    tags: list[str]
    suggested_tags: list[str] = Field(
        default_factory=list,
        description="tags the stream proposed for this media item (untagged posts only)",
    )
    media_ref: str | None
    moment: MomentSpan | None = Field(
        default=None, description="the matching part of a video, when a moment matched best"
    )
    created_at: datetime
    thumbnail: str | None = Field(
        default=None, description="URL of a small JPEG of the matching media (None: none kept)"
    )


class StageLagModel(BaseModel):
    stage: str
    topic: str
    lag: int | None = Field(description="records not yet consumed (None: not known, see reason)")
    reason: str | None = None


class Freshness(BaseModel):
    """How current the index is, as of this answer."""

    indexed_through: datetime | None = Field(
        default=None, description="event time (created_at) of the newest indexed post"
    )
    index_lag_s: float | None = Field(
        default=None,
        description="latest batch: seconds from produce (Kafka timestamp) to Milvus acceptance",
    )
    accepted_at: datetime | None = Field(
        default=None, description="when Milvus accepted the latest batch"
    )
    consumer_lag: list[StageLagModel] = Field(
        default_factory=list, description="per stage, where the broker reports it truthfully"
    )
    consumer_lag_at: datetime | None = Field(default=None, description="when lag was measured")


class SearchResponse(BaseModel):
    results: list[SearchResult]
    cached: bool
    epoch: int | None = Field(description="index epoch the results belong to (None: unknown)")
    model_version: str
    query: QueryKind
    top_k: int
    took_ms: float
    freshness: Freshness | None = Field(
        default=None, description="the index's freshness when this answer was given"
    )


class PostItem(BaseModel):
    item: int
    modality: Modality | str
    media_ref: str | None
    model_version: str
    suggested_tags: list[str] = Field(
        default_factory=list, description="tags the stream proposed for this item"
    )
    moment: MomentSpan | None = None


class PostResponse(BaseModel):
    id: str
    author: str
    text: str
    tags: list[str]
    lang: str | None
    created_at: datetime
    items: list[PostItem]


class CheckResult(BaseModel):
    ok: bool
    detail: str | None = None


class ReadyResponse(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, CheckResult]


class ErrorBody(BaseModel):
    type: str
    message: str
    retriable: bool = False
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
