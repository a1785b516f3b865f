"""Request and response bodies of the live-monitoring endpoints (subscriptions, stats)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from crossfeed.api.models import (
    NOT_BLANK,
    PRINTABLE_ID,
    Freshness,
    MomentSpan,
    SearchFilters,
    TextOrPostQuery,
)

MAX_NAME_CHARS = 100


def _clean_name(value: str | None) -> str | None:
    if value is None:
        return None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("name contains control characters")
    value = " ".join(value.split())
    if not value:
        raise ValueError("name is blank")
    return value


class SubscriptionOptions(BaseModel):
    """What every subscription has besides its query (multipart: the form fields)."""

    model_config = ConfigDict(extra="forbid")

    min_score: float = Field(
        ge=-1.0,
        le=1.0,
        description="cosine similarity a new item needs to match (the same scale as search "
        "scores; -1..1)",
    )
    filters: SearchFilters = Field(default_factory=SearchFilters)
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_NAME_CHARS,
        json_schema_extra={"allOf": [{"pattern": NOT_BLANK}, {"pattern": PRINTABLE_ID}]},
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return _clean_name(value)


class SubscriptionCreate(TextOrPostQuery, SubscriptionOptions):
    """JSON body of ``POST /v1/subscriptions``: exactly one of ``text`` and ``post_id``
    (an image comes as multipart, with the options as form fields)."""


class SubscriptionQuery(BaseModel):
    kind: Literal["text", "image", "post"]
    text: str | None = None
    post_id: str | None = None
    image_sha256: str | None = None


class SubscriptionOut(BaseModel):
    id: str
    name: str
    query: SubscriptionQuery
    min_score: float
    filters: dict[str, Any]
    model_version: str
    active: bool = Field(
        description="matched against new posts (its model version is the one served)"
    )
    created_at: datetime
    events_url: str
    last_event_id: str | None = Field(
        default=None, description="id of the newest kept event (single look-ups only)"
    )


class SubscriptionMatch(BaseModel):
    """The JSON data of one event of ``GET /v1/subscriptions/{id}/events``: a new row that
    matched the standing query."""

    model_config = ConfigDict(extra="allow")  # newer servers may add fields

    subscription: str
    post_id: str
    score: float = Field(description="cosine similarity of the row to the standing query")
    row_id: str
    modality: str
    item: int = Field(description="which item of the post matched (0 = text)")
    moment: MomentSpan | None = None
    text: str = ""
    tags: list[str] = Field(default_factory=list)
    suggested_tags: list[str] = Field(default_factory=list)
    created_at: datetime
    matched_at: datetime
    thumbnail: str | None = None
    event_id: str | None = Field(
        default=None, description="the event's id (what a resume sends as Last-Event-ID)"
    )


class SubscriptionList(BaseModel):
    subscriptions: list[SubscriptionOut]
    total: int
    limit: int
    offset: int


class StageStats(BaseModel):
    stage: str
    in_per_s: float = Field(description="messages consumed per second, last minute, all workers")
    out_per_s: float = Field(description="messages produced per second, last minute")
    series: list[int] = Field(description="messages consumed in each of the last 60 seconds")


class DeadLetterStats(BaseModel):
    stage: str
    reason: str
    count: int


class CollectionStats(BaseModel):
    name: str
    rows: int | None
    serving: bool


class EngineStats(BaseModel):
    ok: bool
    detail: str | None = None


class SubscriptionStats(BaseModel):
    stored: int | None = Field(description="subscriptions stored (None: Redis unavailable)")
    active: int | None = Field(
        description="subscriptions the index stage matched the latest batch against"
    )


class StatsResponse(BaseModel):
    generated_at: datetime
    model_version: str
    window_s: int
    stages: list[StageStats]
    deadletters: list[DeadLetterStats] = Field(description="totals, by stage and reason")
    collections: list[CollectionStats]
    freshness: Freshness
    subscriptions: SubscriptionStats
    engines: dict[str, EngineStats]
    features: list[str] = Field(description="optional endpoints this API serves, e.g. 'trends'")
