"""``Client.trends``/``trend``, ``AsyncClient`` likewise, and ``crossfeed trends``, against
the real API (over fakes) on a loopback port."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from crossfeed.api.app import create_app
from crossfeed.api.cache import MemorySearchCache
from crossfeed.api.metrics import ApiMetrics
from crossfeed.client import AsyncClient, Client
from crossfeed.client.exceptions import ClientInputError, NotFoundError
from crossfeed.core.settings import Settings
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.indexer.memory import InMemoryIndex
from crossfeed.ops.cli import main
from crossfeed.ops.query.trends import sparkline
from crossfeed.trends.base import Observation, TrendKind, TrendSample, TrendTracker, TrendView

NOW = datetime(2024, 5, 9, 12, 0, tzinfo=UTC).timestamp()


def _view(trend_id: str, kind: TrendKind, label: str, score: float) -> TrendView:
    return TrendView(
        id=trend_id,
        kind=kind,
        label=label,
        score=score,
        rate=12,
        baseline=2.0,
        series=[2, 1, 3, 2, 12],
        first_detected=NOW - 120,
        window_s=60.0,
        window_start=NOW - 20,
        samples=[TrendSample("cats1", "cute cats sleeping", None)],
    )


class _FixedTracker(TrendTracker):
    """Two fixed trends (unit tests only)."""

    def __init__(self) -> None:
        self.views = {
            "h:sunset beach": _view("h:sunset beach", "hashtag", "sunset beach", 5.5),
            "c:3": _view("c:3", "cluster", "cats sofa", 3.25),
        }

    def observe(self, batch: Sequence[Observation]) -> None:
        raise AssertionError("the API never observes")

    def current(
        self, *, kind: TrendKind | None = None, limit: int = 20, now: float | None = None
    ) -> list[TrendView]:
        views = [v for v in self.views.values() if kind is None or v.kind == kind]
        return views[:limit]

    def get(self, trend_id: str) -> TrendView | None:
        return self.views.get(trend_id)

    def member_ids(self, trend_id: str, limit: int = 10_000) -> list[str]:
        return ["cats1", "cats2"] if trend_id in self.views else []


@pytest.fixture
def trends_url(
    serve: Callable[[Any], str],
    api_settings: Settings,
    embedder: HashingEmbedder,
    index: InMemoryIndex,
) -> str:
    app = create_app(
        api_settings,
        embedder=embedder,
        index=index,
        cache=MemorySearchCache(prefix="trends-client", ttl_s=60),
        metrics=ApiMetrics(),
        trends=_FixedTracker(),
    )
    return serve(app)


def test_client_lists_and_gets_trends_and_searches_inside_one(trends_url: str) -> None:
    with Client(trends_url) as client:
        page = client.trends()
        assert [t.id for t in page.trends] == ["h:sunset beach", "c:3"]
        assert page.trends[0].series == [2, 1, 3, 2, 12] and page.window_s == 60.0
        assert [t.id for t in client.trends(kind="cluster", limit=5).trends] == ["c:3"]
        assert client.trends(window=2).trends[0].series == [2, 12]
        one = client.trend("h:sunset beach")  # a space in the id travels percent-encoded
        assert one.label == "sunset beach" and one.samples[0].id == "cats1"
        with pytest.raises(NotFoundError):
            client.trend("h:nothing")
        hits = client.search("cats", filters={"trend": "c:3"}, top_k=10)
        assert sorted(r.id for r in hits.results) == ["cats1", "cats2"]


def test_bad_arguments_fail_before_any_request() -> None:
    with Client("http://127.0.0.1:9") as client:
        for kwargs in ({"kind": "words"}, {"limit": 0}, {"limit": 101}, {"window": 0}):
            with pytest.raises(ClientInputError):
                client.trends(**kwargs)  # type: ignore[arg-type]
        with pytest.raises(ClientInputError):
            client.trend("")


async def test_async_client_trends(trends_url: str) -> None:
    async with AsyncClient(trends_url) as client:
        page = await client.trends(kind="hashtag")
        assert [t.label for t in page.trends] == ["sunset beach"]
        assert (await client.trend("c:3")).kind == "cluster"


def test_sparkline_scales_to_its_own_maximum() -> None:
    assert sparkline([0, 4, 8]) == "▁▅█"
    assert sparkline([0, 0]) == "▁▁" and sparkline([]) == ""


def test_cli_prints_a_table_with_sparklines_and_json(
    trends_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["trends", "--url", trends_url])
    out = capsys.readouterr().out
    assert code == 0
    header = out.splitlines()[0]
    for column in ("trend", "kind", "score", "rate vs baseline", "windows"):
        assert column in header
    assert "#sunset_beach" in out and "cats sofa" in out
    assert "12 vs 2.0" in out and sparkline([2, 1, 3, 2, 12]) in out and "5.50" in out
    code = main(["trends", "--url", trends_url, "--kind", "cluster", "--json"])
    body = json.loads(capsys.readouterr().out)
    assert code == 0 and [t["id"] for t in body["trends"]] == ["c:3"]
    code = main(["trends", "c:3", "--url", trends_url])
    out = capsys.readouterr().out
    assert code == 0 and "cats sofa" in out and "cute cats sleeping" in out
    code = main(["search", "cats", "--trend", "c:3", "--url", trends_url, "--json"])
    body = json.loads(capsys.readouterr().out)
    assert code == 0 and sorted(r["id"] for r in body["results"]) == ["cats1", "cats2"]


def test_cli_unknown_trend_is_one_clear_line(
    trends_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["trends", "h:nothing", "--url", trends_url])
    err = capsys.readouterr().err
    assert code == 1 and "no current or recent trend has the id 'h:nothing'" in err
    assert "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["trends", "--limit", "0"])
