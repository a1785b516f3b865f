"""Request and response bodies of the HTTP API (storage rows live in the indexer).

Request models forbid unknown fields, so a misspelt filter is an error instead of
being silently ignored; every string has a length bound. Response models are what
:mod:`crossfeed.client` returns too, so this module imports nothing heavy (no
FastAPI, no numpy, no torch).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from crossfeed.core.schema import MAX_ID_CHARS, MAX_TAGS, MAX_TEXT_CHARS
from crossfeed.core.text import normalize_hashtag
from crossfeed.indexer.base import SearchFilter

Modality = Literal["text", "image", "video"]
QueryKind = Literal["text", "image", "post"]
SuggestQuery = Literal["image", "video", "post"]

MAX_TAG_CHARS = 100
MAX_FILTER_VALUES = 64  # sources or authors one filter may name
MAX_CURSOR_CHARS = 2048
# A trend id (GET /v1/trends): "h:<normalized hashtag>" or "c:<cluster id>", printable.
MAX_TREND_ID_CHARS = 256
TREND_ID_PATTERN = r"^[hc]:[^\x00-\x1f\x7f]+$"
# BCP 47-ish: "en", "pt-BR", "zh-Hant". Stored values are compared exactly.
_LANG_PATTERN = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$"


def _printable(max_chars: int) -> WithJsonSchema:
    """The schema of a string of 1..``max_chars`` characters without control characters,
    as the model's validators check it."""
    return WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": max_chars,
            "pattern": r"^[^\x00-\x1f\x7f]+$",
        }
    )


Tag = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_TAG_CHARS), _printable(MAX_TAG_CHARS)
]
SourceName = Annotated[str, StringConstraints(min_length=1, max_length=100), _printable(100)]
AuthorName = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS), _printable(MAX_ID_CHARS)
]


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
    sources: list[SourceName] = Field(
        default_factory=list,
        max_length=MAX_FILTER_VALUES,
        description="any of these sources, exactly as posts name them (e.g. bluesky, mastodon)",
    )
    authors: list[AuthorName] = Field(
        default_factory=list,
        max_length=MAX_FILTER_VALUES,
        description="any of these authors, exactly as posts name them",
    )
    trend: str | None = Field(
        default=None,
        min_length=3,
        max_length=MAX_TREND_ID_CHARS,
        pattern=TREND_ID_PATTERN,
        description="only posts of this trend (an id from GET /v1/trends); 404 if unknown",
    )

    @field_validator("since", "until", mode="before")
    @classmethod
    def _iso_string(cls, v: Any) -> Any:
        # As documented (a date-time string): a bare number is not read as a Unix time.
        if v is not None and not isinstance(v, str | datetime):
            raise ValueError("must be an ISO-8601 date-time string")
        return v

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

    @field_validator("sources", "authors")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(_no_control_chars(x, "filter value") for x in v))

    @model_validator(mode="after")
    def _range(self) -> SearchFilters:
        if self.since and self.until and self.since >= self.until:
            raise ValueError("since must be earlier than until")
        return self

    def to_index_filter(
        self,
        *,
        model_version: str | None,
        exclude_post_ids: tuple[str, ...] = (),
        post_ids: tuple[str, ...] | None = None,
    ) -> SearchFilter:
        """The index's filter; ``post_ids``: the members of ``trend``, resolved by the API."""
        return SearchFilter(
            modalities=tuple(dict.fromkeys(self.modalities)),
            since_ms=to_epoch_ms(self.since) if self.since else None,
            until_ms=to_epoch_ms(self.until) if self.until else None,
            tags=tuple(self.tags),
            lang=self.lang,
            sources=tuple(self.sources),
            authors=tuple(self.authors),
            exclude_post_ids=exclude_post_ids,
            post_ids=post_ids,
            model_version=model_version,
        )

    def canonical(self) -> dict[str, Any]:
        """An order-independent form for cache keys (``trend`` only when set, so keys of
        searches without one stay what they were)."""
        out: dict[str, Any] = {
            "modalities": sorted(set(self.modalities)),
            "since": to_epoch_ms(self.since) if self.since else None,
            "until": to_epoch_ms(self.until) if self.until else None,
            "tags": sorted(self.tags),
            "lang": self.lang,
            "sources": sorted(self.sources),
            "authors": sorted(self.authors),
        }
        if self.trend is not None:
            out["trend"] = self.trend
        return out


# What the validators below enforce, said in the documented schema too (OpenAPI clients
# and schema-driven fuzzers see what the API accepts): not blank, no control characters.
# "Not blank" = some character that is not whitespace as Python's str.strip() sees it,
# spelled out: regex engines disagree on what \s means (U+0085, U+001C-U+001F).
NOT_BLANK = r"[^\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
PRINTABLE_ID = r"^[^\x00-\x1f\x7f]+$"


def _one_of_text_or_post_id(schema: dict[str, Any]) -> None:
    """Document what the validators accept: exactly one of two non-null strings."""
    props = schema.get("properties", {})
    for key in ("text", "post_id"):
        field = props.get(key, {})
        string = next((s for s in field.pop("anyOf", []) if s.get("type") == "string"), None)
        if string is not None:
            field.update(string)
        field.pop("default", None)
    schema["oneOf"] = [{"required": ["text"]}, {"required": ["post_id"]}]


class TextOrPostQuery(BaseModel):
    """A query given as exactly one of ``text`` and ``post_id`` (search, subscriptions)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=_one_of_text_or_post_id,
    )

    text: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TEXT_CHARS,
        json_schema_extra={"pattern": NOT_BLANK},
    )
    post_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ID_CHARS,
        json_schema_extra={"pattern": PRINTABLE_ID},
    )

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("text", "post_id"):
                if key in data and data[key] is None:
                    raise ValueError(f"{key} must be a string; leave it out instead of null")
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.text is None) == (self.post_id is None):
            raise ValueError("give exactly one of 'text' and 'post_id'")
        if self.text is not None and not self.text.strip():
            raise ValueError("text is blank")
        if self.post_id is not None:
            _no_control_chars(self.post_id, "post_id")
        return self


class SearchRequest(TextOrPostQuery):
    """JSON search body: exactly one of ``text`` and ``post_id``."""

    filters: SearchFilters = Field(default_factory=SearchFilters)
    top_k: int = Field(default=10, ge=1)
    cursor: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_CURSOR_CHARS,
        description="next_cursor of the previous page, sent with the same query and filters",
    )


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
    author: str = ""
    source: str | None = Field(default=None, description="None: indexed before it was stored")
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
    next_cursor: str | None = Field(
        default=None,
        description="send it back as 'cursor' (same query) for the next page; None: last page. "
        "Valid while the index epoch is unchanged (409 after that)",
    )
    freshness: Freshness | None = Field(
        default=None, description="the index's freshness when this answer was given"
    )
    degraded: list[str] = Field(
        default_factory=list,
        description="parts that were away when this answer was given: 'cache' (Redis is "
        "unreachable: the answer comes from the index, uncached)",
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
    source: str | None = Field(default=None, description="None: indexed before it was stored")
    text: str
    tags: list[str]
    lang: str | None
    created_at: datetime
    items: list[PostItem]
    duplicate_of: str | None = Field(
        default=None,
        description="set when the post asked for is a repost: the id of the original it "
        "repeats, whose stored fields this answer carries (a repost is not indexed itself)",
    )


class TagScore(BaseModel):
    tag: str
    score: float = Field(description="in [0, 1]: weighted neighbour vote, mixed with p(tag)")
    support: int = Field(description="how many neighbour posts carry the tag")


class NeighbourPost(BaseModel):
    post_id: str
    score: float = Field(description="cosine similarity of the post's closest item")


class SuggestTagsResponse(BaseModel):
    tags: list[TagScore]
    neighbours: list[NeighbourPost]
    query: SuggestQuery
    model_version: str
    used_posterior: bool = Field(description="the head's tag posterior was mixed in")
    took_ms: float


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


class ErasureResponse(BaseModel):
    """What ``DELETE /v1/posts/{id}`` did (never the post's content)."""

    post_id: str
    erased_at: datetime
    rows_removed: int = Field(description="rows deleted now, over every collection")
    collections: dict[str, int] = Field(description="rows deleted per collection")


class ErrorResponse(BaseModel):
    error: ErrorBody


def json_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error answers of a route whose success is not JSON (an
    image, an event stream): errors are still ``ErrorResponse`` JSON, and say so."""
    schema = {"$ref": "#/components/schemas/ErrorResponse"}
    return {
        code: {"description": "error", "content": {"application/json": {"schema": schema}}}
        for code in codes
    }


# The error answers a JSON route may give (documented on every such route).
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 409, 413, 415, 422, 503)
}
