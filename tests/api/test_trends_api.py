"""``GET /v1/trends``, ``GET /v1/trends/{id}`` and trend-scoped search, over fakes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from crossfeed.api.app import create_app
from crossfeed.api.cache import MemorySearchCache
from crossfeed.api.live import LiveServices
from crossfeed.api.metrics import ApiMetrics
from crossfeed.api.trend_models import TrendResponse, TrendsResponse
from crossfeed.core.settings import Settings
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.indexer.memory import InMemoryIndex
from crossfeed.trends.base import Observation, TrendKind, TrendSample, TrendTracker, TrendView
from crossfeed.trends.exceptions import TrendsUnavailableError

NOW = datetime(2024, 5, 9, 12, 0, tzinfo=UTC).timestamp()


def _view(trend_id: str, kind: TrendKind, label: str, score: float) -> TrendView:
    return TrendView(
        id=trend_id,
        kind=kind,
        label=label,
        score=score,
        rate=9,
        baseline=1.5,
        series=[1, 2, 1, 2, 9],
        first_detected=NOW - 60,
        window_s=60.0,
        window_start=NOW - 30,
        samples=[TrendSample("cats1", "cute cats", "https://example.org/c.png")],
    )


class _FixedTracker(TrendTracker):
    """Fixed trends and members (unit tests only); ``down`` makes every call fail."""

    def __init__(self) -> None:
        self.views = {
            "h:cats": _view("h:cats", "hashtag", "cats", 4.0),
            "c:7": _view("c:7", "cluster", "beach sunset", 2.5),
            "h:gone": _view("h:gone", "hashtag", "gone", 3.0),
        }
        self.members = {"h:cats": ["cats1", "cats2", "chats", "nope"], "c:7": ["dogs1"]}
        self.down = False

    def observe(self, batch: Sequence[Observation]) -> None:
        raise AssertionError("the API never observes")

    def _check(self) -> None:
        if self.down:
            raise TrendsUnavailableError("redis is down")

    def current(
        self, *, kind: TrendKind | None = None, limit: int = 20, now: float | None = None
    ) -> list[TrendView]:
        self._check()
        views = [v for v in self.views.values() if kind is None or v.kind == kind]
        return sorted(views, key=lambda v: -v.score)[:limit]

    def get(self, trend_id: str) -> TrendView | None:
        self._check()
        return self.views.get(trend_id)

    def member_ids(self, trend_id: str, limit: int = 10_000) -> list[str]:
        self._check()
        return self.members.get(trend_id, [])[:limit]


@pytest.fixture
def tracker() -> _FixedTracker:
    return _FixedTracker()


@pytest.fixture
def trends_client(
    settings: Settings,
    embedder: HashingEmbedder,
    index: InMemoryIndex,
    cache: MemorySearchCache,
    tracker: _FixedTracker,
) -> Iterator[TestClient]:
    app = create_app(
        settings,
        embedder=embedder,
        index=index,
        cache=cache,
        metrics=ApiMetrics(),
        live=LiveServices.memory(),
        trends=tracker,
    )
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_lists_trends_highest_score_first_with_everything_a_panel_needs(
    trends_client: TestClient,
) -> None:
    r = trends_client.get("/v1/trends")
    assert r.status_code == 200, r.text
    body = TrendsResponse.model_validate(r.json())
    assert [t.id for t in body.trends] == ["h:cats", "h:gone", "c:7"]
    cats = body.trends[0]
    assert (cats.kind, cats.label, cats.score, cats.rate, cats.baseline) == (
        "hashtag",
        "cats",
        4.0,
        9.0,
        1.5,
    )
    assert cats.series == [1, 2, 1, 2, 9] and cats.window_s == 60.0
    assert cats.first_detected == datetime.fromtimestamp(NOW - 60, tz=UTC)
    assert cats.samples[0].id == "cats1" and cats.samples[0].media_ref
    assert body.freshness is not None and body.kind == "all"
    # /v1/stats names the feature, so the dashboard shows its trends panel.
    assert trends_client.get("/v1/stats").json()["features"] == ["trends"]


def test_kind_limit_and_window_narrow_the_listing(trends_client: TestClient) -> None:
    clusters = trends_client.get("/v1/trends", params={"kind": "cluster"}).json()
    assert [t["id"] for t in clusters["trends"]] == ["c:7"]
    one = trends_client.get("/v1/trends", params={"limit": 1, "window": 2}).json()
    assert [t["id"] for t in one["trends"]] == ["h:cats"]
    assert one["trends"][0]["series"] == [2, 9]


@pytest.mark.parametrize(
    "params",
    [
        {"kind": "words"},
        {"limit": 0},
        {"limit": 101},
        {"limit": "many"},
        {"window": 0},
        {"window": -3},
    ],
)
def test_bad_parameters_are_422(trends_client: TestClient, params: dict[str, object]) -> None:
    r = trends_client.get("/v1/trends", params=params)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["type"] == "BadRequestError"


def test_one_trend_by_id_and_a_clear_404_for_an_unknown_one(trends_client: TestClient) -> None:
    r = trends_client.get("/v1/trends/c:7")
    assert r.status_code == 200, r.text
    trend = TrendResponse.model_validate(r.json())
    assert trend.label == "beach sunset" and trend.kind == "cluster"
    missing = trends_client.get("/v1/trends/h:nothing")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "no current or recent trend has the id 'h:nothing'"
    assert trends_client.get("/v1/trends/x:bad").status_code == 422  # not a trend id


def test_trend_scoped_search_returns_only_the_trends_posts_ranked_by_the_query(
    trends_client: TestClient,
) -> None:
    everything = trends_client.post("/v1/search", json={"text": "cute cats", "top_k": 10}).json()
    assert {"cats3", "dogs1"} <= {r["id"] for r in everything["results"]}
    body = {"text": "cute cats", "top_k": 10, "filters": {"trend": "h:cats"}}
    r = trends_client.post("/v1/search", json=body)
    assert r.status_code == 200, r.text
    ids = [x["id"] for x in r.json()["results"]]
    assert sorted(ids) == ["cats1", "cats2", "chats"]  # "nope" is not indexed
    scores = [x["score"] for x in r.json()["results"]]
    assert scores == sorted(scores, reverse=True)
    # The same search inside another trend is another answer, never the first one's cache.
    body["filters"] = {"trend": "c:7"}
    assert [x["id"] for x in trends_client.post("/v1/search", json=body).json()["results"]] == [
        "dogs1"
    ]


def test_trend_scoped_search_by_image_through_the_multipart_form(
    trends_client: TestClient, make_png: object
) -> None:
    image = make_png((220, 20, 20))  # type: ignore[operator]
    r = trends_client.post(
        "/v1/search",
        files={"file": ("q.jpg", image, "image/jpeg")},
        data={"filters": '{"trend": "c:7"}', "top_k": "5"},
    )
    assert r.status_code == 200, r.text
    assert [x["id"] for x in r.json()["results"]] == ["dogs1"]


def test_a_trend_without_indexed_posts_searches_nothing(
    trends_client: TestClient, tracker: _FixedTracker
) -> None:
    body = {"text": "anything", "filters": {"trend": "h:gone"}}
    r = trends_client.post("/v1/search", json=body)
    assert r.status_code == 200 and r.json()["results"] == []


def test_search_in_an_unknown_trend_is_404_and_a_bad_trend_id_422(
    trends_client: TestClient,
) -> None:
    r = trends_client.post("/v1/search", json={"text": "x", "filters": {"trend": "h:nope"}})
    assert r.status_code == 404 and "h:nope" in r.json()["error"]["message"]
    for bad in ["cats", "h:", "h:\x01x", "h:" + "x" * 300, 7]:
        r = trends_client.post("/v1/search", json={"text": "x", "filters": {"trend": bad}})
        assert r.status_code == 422, (bad, r.text)


def test_redis_down_is_503_retriable_not_500(
    trends_client: TestClient, tracker: _FixedTracker
) -> None:
    tracker.down = True
    for r in [
        trends_client.get("/v1/trends"),
        trends_client.get("/v1/trends/h:cats"),
        trends_client.post("/v1/search", json={"text": "x", "filters": {"trend": "h:cats"}}),
    ]:
        assert r.status_code == 503 and r.json()["error"]["retriable"] is True
        assert r.headers["retry-after"]


def test_standing_queries_refuse_a_trend_filter(trends_client: TestClient) -> None:
    body = {"text": "cats", "min_score": 0.1, "filters": {"trend": "h:cats"}}
    r = trends_client.post("/v1/subscriptions", json=body)
    assert r.status_code == 422
    assert "does not apply to standing queries" in r.text


def test_trends_off_means_no_routes_and_trend_filters_404(
    settings: Settings, embedder: HashingEmbedder, index: InMemoryIndex
) -> None:
    settings.trends.enabled = False
    app = create_app(
        settings,
        embedder=embedder,
        index=index,
        cache=MemorySearchCache(prefix="t", ttl_s=60),
        live=LiveServices.memory(),
    )
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.get("/v1/trends").status_code == 404
        assert c.get("/v1/stats").json()["features"] == []
        r = c.post("/v1/search", json={"text": "x", "filters": {"trend": "h:cats"}})
        assert r.status_code == 404 and "CROSSFEED_TRENDS=0" in r.json()["error"]["message"]
