"""The Prometheus scrape config and alert rules: promtool checks them, promtool's unit
tests make every alert fire (and stay quiet), and each rule names real metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from crossfeed.ops.run.processes import METRICS_PORT_ENV


def _rules(deploy_dir: Path) -> list[dict[str, Any]]:
    doc = yaml.safe_load((deploy_dir / "prometheus" / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_scrape_config(promtool_run: Any) -> None:
    out = promtool_run("check", "config", "prometheus/prometheus.yml")
    assert "SUCCESS" in out and "alerts.yml" in out  # the rule file is checked with it


def test_promtool_accepts_the_rules(promtool_run: Any, deploy_dir: Path) -> None:
    out = promtool_run("check", "rules", "prometheus/alerts.yml")
    assert f"{len(_rules(deploy_dir))} rules found" in out


def test_the_rules_unit_tests_pass(promtool_run: Any) -> None:
    out = promtool_run("test", "rules", "prometheus/alerts.test.yml")
    assert "SUCCESS" in out


def test_every_alert_fires_in_a_unit_test_and_stays_quiet_in_another(deploy_dir: Path) -> None:
    """An alert whose expression can never be true would pass `check rules`: its unit
    test must show it firing (and not firing) at some time."""
    tests = yaml.safe_load((deploy_dir / "prometheus" / "alerts.test.yml").read_text())
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in _rules(deploy_dir) if "alert" in rule}
    assert alerts - fired == set(), "alerts never shown firing"
    assert alerts - quiet == set(), "alerts never shown quiet"
    assert (fired | quiet) - alerts == set(), "unit tests name alerts that do not exist"


def test_the_rules_cover_lag_dead_letters_freshness_and_source_liveness(
    deploy_dir: Path, metric_names: Any
) -> None:
    used = set().union(*(metric_names(rule["expr"]) for rule in _rules(deploy_dir)))
    for needed in (
        "crossfeed_consumer_lag",
        "crossfeed_deadletters_total",
        "crossfeed_freshness_seconds",
        "crossfeed_source_seconds_since_event",
    ):
        assert needed in used


def test_rules_name_only_exported_or_declared_pending_metrics(
    deploy_dir: Path, metric_names: Any, allowed_metrics: frozenset[str]
) -> None:
    for rule in _rules(deploy_dir):
        unknown = metric_names(rule["expr"]) - allowed_metrics
        assert unknown == set(), f"{rule.get('alert')} names metrics nobody exports: {unknown}"


def test_the_name_check_catches_a_misspelt_metric(
    metric_names: Any, allowed_metrics: frozenset[str]
) -> None:
    expr = (
        'sum(rate(crossfeed_deadletter_total[5m])) / sum(rate({__name__="crossfeed_posts_in"}[5m]))'
    )
    assert metric_names(expr) - allowed_metrics == {
        "crossfeed_deadletter_total",
        "crossfeed_posts_in",  # a counter is exported as crossfeed_posts_in_total
    }


def test_pending_metrics_are_not_exported_yet_and_are_used(
    deploy_dir: Path,
    metric_names: Any,
    exported_metrics: frozenset[str],
    pending_metrics: dict[str, str],
) -> None:
    """Once a pending metric is exported, its line in alerts.yml must go (reconcile the
    name and type with what the code registers)."""
    assert pending_metrics, "the pending-metric list is empty or unreadable"
    assert set(pending_metrics) & exported_metrics == set()
    used = set().union(*(metric_names(rule["expr"]) for rule in _rules(deploy_dir)))
    assert set(pending_metrics) - used == set(), "pending metrics no rule uses"
    assert all(pending_metrics.values()), "each pending metric says what it measures"


def test_the_prometheus_rule_object_carries_the_same_groups(
    deploy_dir: Path, manifests: list[tuple[Path, dict[str, Any]]]
) -> None:
    alerts = yaml.safe_load((deploy_dir / "prometheus" / "alerts.yml").read_text())
    rules = [doc for _path, doc in manifests if doc["kind"] == "PrometheusRule"]
    assert len(rules) == 1
    assert rules[0]["spec"]["groups"] == alerts["groups"], (
        "kubernetes/monitoring.yaml's PrometheusRule differs from prometheus/alerts.yml"
    )


def test_scrape_jobs_match_the_alerts_and_the_worker_port(deploy_dir: Path) -> None:
    config = yaml.safe_load((deploy_dir / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"crossfeed-api", "crossfeed-worker"} <= set(jobs)
    compose = yaml.safe_load((deploy_dir / "docker-compose.yml").read_text())
    worker_env = compose["services"]["worker"]["environment"]
    port = int(worker_env[METRICS_PORT_ENV])
    assert jobs["crossfeed-worker"]["dns_sd_configs"][0]["port"] == port
    assert jobs["crossfeed-worker"]["dns_sd_configs"][0]["names"] == ["worker"]
    assert jobs["crossfeed-api"]["static_configs"][0]["targets"] == ["api:8000"]
