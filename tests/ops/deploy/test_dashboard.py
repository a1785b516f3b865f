"""The Grafana dashboard: valid JSON whose every panel query names metrics crossfeed
exports (or the declared pending ones), covering what an operator watches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module")
def dashboard(deploy_dir: Path) -> dict[str, Any]:
    return json.loads((deploy_dir / "grafana" / "crossfeed.json").read_text())


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_every_panel_query_names_exported_metrics(
    dashboard: dict[str, Any], metric_names: Any, allowed_metrics: frozenset[str]
) -> None:
    for panel in _panels(dashboard):
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, f"{panel['title']!r}: no metric in {target['expr']!r}"
            assert names - allowed_metrics == set(), (
                f"panel {panel['title']!r} names metrics crossfeed does not export: "
                f"{names - allowed_metrics}"
            )


def test_the_dashboard_shows_what_operators_watch(
    dashboard: dict[str, Any], metric_names: Any
) -> None:
    used = {
        name
        for panel in _panels(dashboard)
        for target in panel["targets"]
        for name in metric_names(target["expr"])
    }
    needed = {
        "crossfeed_posts_in_total",  # ingest per stage
        "crossfeed_posts_out_total",
        "crossfeed_consumer_lag",  # lag
        "crossfeed_freshness_seconds",  # freshness
        "crossfeed_deadletters_total",  # dead letters
        "crossfeed_search_seconds_bucket",  # query latency
        "crossfeed_cache_hits_total",  # cache hit rate
        "crossfeed_cache_misses_total",
    }
    assert needed - used == set()


def test_panels_are_laid_out_and_use_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in _panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"


def test_the_kustomization_ships_this_dashboard(deploy_dir: Path) -> None:
    import yaml

    kustomization = yaml.safe_load((deploy_dir / "kustomization.yaml").read_text())
    generators = {g["name"]: g for g in kustomization["configMapGenerator"]}
    dashboard = generators["crossfeed-grafana-dashboard"]
    assert dashboard["files"] == ["grafana/crossfeed.json"]
    assert dashboard["options"]["labels"]["grafana_dashboard"] == "1"
