"""Response bodies of ``GET /v1/trends`` and ``GET /v1/trends/{id}``.

Plain pydantic like :mod:`crossfeed.api.models` (the client returns these); built from the
tracker's :class:`~crossfeed.trends.base.TrendView` by :func:`trend_from_view`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from crossfeed.api.models import Freshness

if TYPE_CHECKING:
    from crossfeed.trends.base import TrendView

TrendKindName = Literal["hashtag", "cluster"]
TrendKindFilter = Literal["hashtag", "cluster", "all"]

MAX_TREND_LIMIT = 100  # trends one listing returns at most


class TrendSampleModel(BaseModel):
    id: str = Field(description="post id")
    text: str = ""
    media_ref: str | None = None


class Trend(BaseModel):
    """One bursting hashtag or cluster of the shared space."""

    id: str = Field(description="stable while the trend lasts: 'h:<tag>' or 'c:<cluster>'")
    kind: TrendKindName
    label: str = Field(description="the hashtag; for a cluster its most telling tags/words")
    score: float = Field(description="burst score of the current window against its baseline")
    rate: float = Field(description="distinct authors in the current window")
    baseline: float = Field(description="expected distinct authors per window")
    series: list[int] = Field(
        description="distinct authors per window, oldest first, the current window last"
    )
    first_detected: datetime = Field(description="event time the burst was first flagged")
    window_s: float = Field(description="length of one window, seconds of event time")
    window_start: datetime = Field(description="event time the current window starts")
    samples: list[TrendSampleModel] = Field(default_factory=list)


class TrendsResponse(BaseModel):
    trends: list[Trend]
    kind: TrendKindFilter
    window_s: float = Field(description="length of one window, seconds of event time")
    took_ms: float
    freshness: Freshness | None = Field(
        default=None, description="the index's freshness when this answer was given"
    )


class TrendResponse(Trend):
    """``GET /v1/trends/{id}``: the trend, and how fresh the data behind it is."""

    freshness: Freshness | None = None


def _when(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def trend_from_view(view: TrendView, *, windows: int | None = None) -> Trend:
    """The API's form of a tracker view; ``windows`` keeps only the last N of the series."""
    series = list(view.series)
    if windows is not None:
        series = series[-windows:]
    return Trend(
        id=view.id,
        kind=view.kind,
        label=view.label,
        score=round(float(view.score), 6),
        rate=float(view.rate),
        baseline=round(float(view.baseline), 6),
        series=[int(x) for x in series],
        first_detected=_when(view.first_detected),
        window_s=float(view.window_s),
        window_start=_when(view.window_start),
        samples=[
            TrendSampleModel(id=s.post_id, text=s.text, media_ref=s.media_ref) for s in view.samples
        ],
    )
