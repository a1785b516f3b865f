"""Workers started together get distinct metrics ports: base, base + 1, ..."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from crossfeed.exceptions import ConfigError
from crossfeed.ops.run.processes import METRICS_PORT_ENV, metrics_ports, worker_processes


def test_metrics_ports() -> None:
    assert metrics_ports("9400", 3) == [9400, 9401, 9402]
    assert metrics_ports(0, 2) == [0, 0]
    assert metrics_ports("", 2) == [0, 0]
    with pytest.raises(ConfigError, match="65535"):
        metrics_ports(65535, 2)
    with pytest.raises(ConfigError, match=METRICS_PORT_ENV):
        metrics_ports("nine", 1)


def test_each_worker_process_gets_its_own_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = (
        "import os, pathlib; "
        f"pathlib.Path({str(tmp_path)!r}, str(os.getpid())).write_text("
        f"os.environ.get({METRICS_PORT_ENV!r}, 'unset'))"
    )
    monkeypatch.setenv(METRICS_PORT_ENV, "9500")
    with worker_processes(3, argv=(sys.executable, "-c", script)) as procs:
        for proc in procs:
            proc.wait(timeout=30)
    assert sorted(p.read_text() for p in tmp_path.iterdir()) == ["9500", "9501", "9502"]


def test_without_a_port_workers_serve_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = (
        "import os, pathlib; "
        f"pathlib.Path({str(tmp_path)!r}, str(os.getpid())).write_text("
        f"os.environ.get({METRICS_PORT_ENV!r}, 'unset'))"
    )
    monkeypatch.delenv(METRICS_PORT_ENV, raising=False)
    with worker_processes(2, argv=(sys.executable, "-c", script)) as procs:
        for proc in procs:
            proc.wait(timeout=30)
    assert sorted(p.read_text() for p in tmp_path.iterdir()) == ["unset", "unset"]
