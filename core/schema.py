"""Wire format: the JSON messages on crossfeed's topics.

``posts.raw``        :class:`Post` (key = post id), as sources send it.
``posts.clean``      :class:`CleanPost` (key = post id), normalised, de-duplicated.
``posts.vectors``    :class:`VectorRecord` (key = post id), one per embedded item.
``posts.deadletter`` :class:`DeadLetter` (key = post id when known): what failed, where, why.

Every message carries ``schema_version`` so consumers can evolve.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 1

MediaKind = Literal["image", "video"]
Modality = Literal["text", "image", "video"]
Stage = Literal["parse", "validate", "normalize", "decode", "embed", "index"]

MAX_TEXT_CHARS = 10_000
MAX_TAGS = 64
MAX_MEDIA = 8
MAX_SUGGESTED_TAGS = 16
MAX_ID_CHARS = 200


def check_unicode(value: Any, where: str) -> None:
    """Refuse strings that are not Unicode text: lone surrogates (``"\\ud800"`` in JSON).

    They parse, but no UTF-8 encoder (Kafka keys, Milvus, the next stage's JSON) accepts
    them, so a post carrying one must fail validation here, not crash a later stage.
    Walks lists and dicts (keys too) without recursion.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(
                    f"{where} is not valid Unicode text (a lone surrogate at {exc.start})"
                ) from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


class MediaItem(BaseModel):
    """One image or video attached to a post: by URL, by local path, or inline."""

    model_config = ConfigDict(extra="forbid")

    kind: MediaKind
    url: str | None = None
    path: str | None = None
    data_base64: str | None = None
    mime: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> MediaItem:
        given = [x for x in (self.url, self.path, self.data_base64) if x]
        if len(given) != 1:
            raise ValueError("media needs exactly one of url, path, data_base64")
        return self

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.lower().startswith(("http://", "https://")):
            raise ValueError("media url must be http(s)")
        return v

    def inline_bytes(self) -> bytes:
        """Decode ``data_base64``; raises ValueError on bad base64."""
        if self.data_base64 is None:
            raise ValueError("media has no inline data")
        try:
            return base64.b64decode(self.data_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"media data_base64 is not valid base64: {exc}") from exc

    def reference(self) -> str:
        """A short, human-usable pointer to the media (never the inline bytes)."""
        return self.url or self.path or f"inline:{self.mime or self.kind}"


class Post(BaseModel):
    """A social post as sources send it on ``posts.raw``."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    source: str = Field(min_length=1, max_length=100)
    author: str = Field(max_length=200)
    created_at: datetime
    text: str = Field(default="", max_length=MAX_TEXT_CHARS)
    tags: list[str] = Field(default_factory=list, max_length=MAX_TAGS)
    media: list[MediaItem] = Field(default_factory=list, max_length=MAX_MEDIA)
    lang: str | None = Field(default=None, max_length=16)
    metadata: dict[str, Any] | None = None

    @field_validator("created_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        return v if v.tzinfo else v.replace(tzinfo=UTC)

    @field_validator("metadata")
    @classmethod
    def _unicode(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        # str fields refuse lone surrogates by themselves; free-form JSON does not.
        check_unicode(v, "metadata")
        return v

    @model_validator(mode="after")
    def _has_content(self) -> Post:
        if not self.text.strip() and not self.tags and not self.media:
            raise ValueError("post has no text, tags or media")
        return self


class CleanPost(BaseModel):
    """A post after normalisation, on ``posts.clean``."""

    schema_version: int = SCHEMA_VERSION
    post: Post
    clean_text: str
    hashtags: list[str]  # normalised, split, lower-case, de-duplicated, in order
    content_hash: str
    duplicate_of: str | None = None  # id of the first post with the same content hash
    received_at: datetime
    # When the post was produced to posts.raw (its Kafka record timestamp), for freshness.
    produced_at: datetime | None = None


class VectorRecord(BaseModel):
    """One embedded item of a post, on ``posts.vectors``."""

    schema_version: int = SCHEMA_VERSION
    post_id: str
    item: int  # 0 = the text; 1.. = media items in order
    modality: Modality
    vector: list[float]
    model_version: str
    created_at: datetime
    embedded_at: datetime
    author: str
    text: str
    tags: list[str]
    lang: str | None
    media_ref: str | None
    # The post's source (records written before it was carried have none).
    source: str | None = None
    # Tags proposed by the stream's translation step for media of untagged posts
    # (best first); never mixed into ``tags``, which stay what the author wrote.
    suggested_tags: list[str] = Field(default_factory=list, max_length=MAX_SUGGESTED_TAGS)
    # A video moment (see encoders/moments.py): which one, and its time span in the
    # video; all None for a whole item.
    moment: int | None = Field(default=None, ge=0)
    start_s: float | None = Field(default=None, ge=0)
    end_s: float | None = Field(default=None, ge=0)
    # The post's produce time on posts.raw (see CleanPost.produced_at), for freshness.
    produced_at: datetime | None = None

    @model_validator(mode="after")
    def _moment_fields(self) -> VectorRecord:
        given = (self.moment is not None, self.start_s is not None, self.end_s is not None)
        if any(given) and not all(given):
            raise ValueError("a moment needs moment, start_s and end_s together")
        if self.moment is not None and self.modality != "video":
            raise ValueError("only videos have moments")
        if self.start_s is not None and self.end_s is not None and self.end_s < self.start_s:
            raise ValueError("a moment cannot end before it starts")
        return self

    @property
    def row_id(self) -> str:
        """Primary key in the index: stable across retries, so upserts are idempotent."""
        return row_id(self.post_id, self.modality, self.item, self.moment)


def row_id(post_id: str, modality: str, item: int, moment: int | None = None) -> str:
    base = f"{post_id}:{modality}:{item}"
    return base if moment is None else f"{base}:m{moment}"


class DeadLetter(BaseModel):
    """Something that could not be processed, with the original payload and why."""

    schema_version: int = SCHEMA_VERSION
    stage: Stage
    reason: str
    post_id: str | None = None
    payload: str  # the original message, as text (base64 when it was not UTF-8)
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"
    failed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def from_bytes(
        cls, stage: Stage, reason: str, raw: bytes, post_id: str | None = None
    ) -> DeadLetter:
        try:
            return cls(stage=stage, reason=reason, post_id=post_id, payload=raw.decode("utf-8"))
        except UnicodeDecodeError:
            return cls(
                stage=stage,
                reason=reason,
                post_id=post_id,
                payload=base64.b64encode(raw).decode("ascii"),
                payload_encoding="base64",
            )
