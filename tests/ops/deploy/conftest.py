"""Fixtures for the deployment checks: the files under ``ops/deploy`` and ``promtool``.

``promtool`` comes from Debian's ``prometheus`` package. When it is not on PATH, the
package is downloaded with ``apt-get download`` and only unpacked (``dpkg-deb -x``)
under ``.state/tools``: installing it would also start a Prometheus server listening on
every interface. When the package lists are missing and we are root, ``apt-get update``
runs first. If promtool still cannot be had, the tests that need it fail (never skip).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "ops" / "deploy"
TOOLS = REPO / ".state" / "tools"
PROMTOOL_CACHED = TOOLS / "prometheus" / "usr" / "bin" / "promtool"


def _unpack_prometheus_deb() -> Path | None:
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with tempfile.TemporaryDirectory() as tmp:
        # Readable by apt's sandbox user, so apt need not fall back to root downloads.
        os.chmod(tmp, 0o755)

        def download() -> bool:
            cmd = ["apt-get", "download", "-q", "prometheus"]
            done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, timeout=600)
            return done.returncode == 0

        if not download() and os.geteuid() == 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=900)
            download()
        debs = sorted(Path(tmp).glob("prometheus_*.deb"))
        if not debs:
            return None
        target = TOOLS / "prometheus"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(target)], check=True, timeout=300)
    return PROMTOOL_CACHED if PROMTOOL_CACHED.is_file() else None


@pytest.fixture(scope="session")
def promtool() -> Path:
    """Path of a working ``promtool``."""
    found = shutil.which("promtool")
    path = Path(found) if found else PROMTOOL_CACHED
    if not path.is_file():
        unpacked = _unpack_prometheus_deb()
        if unpacked is None:
            pytest.fail(
                "promtool not found and Debian's prometheus package could not be fetched "
                "(apt-get download prometheus); install it: apt-get install prometheus"
            )
        path = unpacked
    return path


def run_promtool(promtool: Path, *args: str, cwd: Path = DEPLOY) -> str:
    """Run promtool; fail the test with its output when it exits non-zero."""
    done = subprocess.run(
        [str(promtool), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        pytest.fail(f"promtool {' '.join(args)} failed:\n{output}")
    return output


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every Kubernetes object of the kustomization's resources, with its file."""
    kustomization = load_yaml(DEPLOY / "kustomization.yaml")
    for rel in kustomization["resources"]:
        path = DEPLOY / rel
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                yield path, doc


# --------------------------------------------------------------------------- metric names

# Series Prometheus makes itself for every target.
PROMETHEUS_OWN = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created"),
    "gauge": ("",),
}


@pytest.fixture(scope="session")
def exported_metrics() -> frozenset[str]:
    """Every series name crossfeed's metric bundles export, on fresh registries:
    WorkerMetrics and ApiMetrics, with the suffixes Prometheus' client adds per type."""
    from crossfeed.api.metrics import ApiMetrics
    from crossfeed.streams.metrics import WorkerMetrics

    names: set[str] = set()
    for bundle in (WorkerMetrics(), ApiMetrics()):
        for family in bundle.registry.collect():
            for suffix in _SUFFIXES.get(family.type, ("",)):
                names.add(family.name + suffix)
    return frozenset(names)


@pytest.fixture(scope="session")
def pending_metrics() -> dict[str, str]:
    """The ``# pending-metric: NAME description`` lines of alerts.yml: metrics the rules
    and the dashboard use that other branches are adding (not exported on main yet)."""
    out: dict[str, str] = {}
    for line in (DEPLOY / "prometheus" / "alerts.yml").read_text().splitlines():
        if line.startswith("# pending-metric:"):
            name, _, what = line.split(":", 1)[1].strip().partition(" ")
            out[name] = what.strip()
    return out


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (``foo``, ``foo{a="b"}``, ``{__name__="foo"}``).
    Grafana's ``$__rate_interval``-style variables are replaced by a duration first."""
    import re

    import promql_parser

    expr = re.sub(r"\$__\w+", "5m", expr)
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            for matcher in node.matchers.matchers:
                if matcher.name == "__name__":
                    names.add(matcher.value)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


@pytest.fixture(scope="session")
def metric_names() -> Any:
    """:func:`promql_metric_names`, for the tests (conftest modules are not importable)."""
    return promql_metric_names


@pytest.fixture(scope="session")
def deploy_dir() -> Path:
    return DEPLOY


@pytest.fixture(scope="session")
def manifests() -> list[tuple[Path, dict[str, Any]]]:
    return list(load_manifests())


@pytest.fixture(scope="session")
def promtool_run(promtool: Path) -> Any:
    """``promtool_run("check", "rules", FILE)`` -> output; fails the test on an error."""
    return lambda *args: run_promtool(promtool, *args)


@pytest.fixture(scope="session")
def allowed_metrics(
    exported_metrics: frozenset[str], pending_metrics: dict[str, str]
) -> frozenset[str]:
    """What a rule or a panel may name: exported, declared pending, or Prometheus' own."""
    return exported_metrics | frozenset(pending_metrics) | PROMETHEUS_OWN
