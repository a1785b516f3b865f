"""``crossfeed bench engines``: how long each local engine takes to start.

Each engine is started through :func:`crossfeed.ops.engines.control.up` on spare ports,
with its pidfiles, configs and data in a temporary state directory, timed from
spawn to the first real answer (``EngineStatus.start_s``; unpacking binaries is
reported apart as ``prepare_s``), then stopped with :func:`~crossfeed.ops.engines.control.down`.
The engines on the configured (default) ports are never touched: every port is
checked free before use, and a run whose engine turns out to be someone else's is
an error, not a measurement.
"""

from __future__ import annotations

import copy
import logging
import random
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crossfeed.core.settings import (
    KafkaSettings,
    MilvusSettings,
    RedisSettings,
    Settings,
    StateSettings,
)
from crossfeed.ops.bench.report import BenchReport, Table, free_port, summarize
from crossfeed.ops.exceptions import BenchError

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"kafka": 9092, "redis": 6379, "milvus": 19530}
# MILVUS_URI ports for which every shifted port of the instance stays in 1024..65535
# (see crossfeed.ops.engines.launch.milvus_ports).
MILVUS_PORT_RANGE = (18175, 31965)


def pick_milvus_port(rng: random.Random | None = None, attempts: int = 64) -> int:
    """A gRPC port whose whole Milvus port block is free and disjoint from the default one.

    A Milvus instance on port P listens on every default port + (P - 19530); the block
    must neither be in use now nor overlap the default instance's ports, so the dev
    Milvus (running or not) is never disturbed.
    """
    from crossfeed.ops.engines.launch import MILVUS_DEFAULT_PORTS, milvus_listen_ports, milvus_ports
    from crossfeed.ops.engines.procs import busy_ports

    rng = rng or random.Random()
    default_block = set(MILVUS_DEFAULT_PORTS.values())
    for _ in range(attempts):
        port = rng.randint(*MILVUS_PORT_RANGE)
        block = milvus_listen_ports(milvus_ports(port))
        if default_block.intersection(block) or set(milvus_ports(port).values()) & default_block:
            continue
        if not busy_ports(block):
            return port
    raise BenchError("found no free block of ports for a second Milvus")


def engine_settings(base: Settings, name: str, state_dir: Path, port: int) -> Settings:
    """``base`` with ``name`` pointed at 127.0.0.1:``port`` and state in ``state_dir``."""
    if port == DEFAULT_PORTS[name]:
        raise BenchError(f"refusing to bench {name} on its default port {port}")
    s = copy.copy(base)
    s.state = StateSettings(state_dir=state_dir)
    if name == "kafka":
        s.kafka = KafkaSettings(bootstrap=f"127.0.0.1:{port}")
    elif name == "redis":
        s.redis = RedisSettings(url=f"redis://127.0.0.1:{port}/0")
    elif name == "milvus":
        s.milvus = MilvusSettings(uri=f"http://127.0.0.1:{port}")
    else:
        raise BenchError(f"unknown engine {name!r}")
    return s


def _port_for(name: str) -> int:
    return pick_milvus_port() if name == "milvus" else free_port()


def _wipe_data(state_dir: Path, name: str) -> None:
    """Remove an engine's data (not its unpacked binaries) so the next start is cold."""
    workdir = state_dir / "engines" / name
    for sub in ("data", "logs", "run"):
        target = workdir / sub
        if target.is_dir() and target.resolve().is_relative_to(state_dir.resolve()):
            shutil.rmtree(target)


def start_once(base: Settings, name: str, state_dir: Path) -> dict[str, Any]:
    """Start and stop ``name`` once on a spare port; return its timings."""
    from crossfeed.ops.engines.control import down, up

    port = _port_for(name)
    settings = engine_settings(base, name, state_dir, port)
    status = up(settings, (name,))[0]
    try:
        if status.action != "started" or status.start_s is None:
            raise BenchError(
                f"{name} on port {port} was already answering ({status.action}); "
                "not a start-time measurement"
            )
        return {"port": port, "start_s": status.start_s, "prepare_s": status.prepare_s or 0.0}
    finally:
        down(settings, (name,))


def run_engines_bench(
    base: Settings,
    *,
    engines: Sequence[str] = ("kafka", "redis", "milvus"),
    repeats: int = 3,
    milvus_repeats: int = 2,
    progress: bool = True,
) -> BenchReport:
    """Start each engine ``repeats`` times (Milvus ``milvus_repeats``) and report the times."""
    from tqdm import tqdm

    if repeats < 1 or milvus_repeats < 1:
        raise BenchError("repeats must be >= 1")
    unknown = sorted(set(engines) - set(DEFAULT_PORTS))
    if unknown:
        raise BenchError(f"unknown engine(s) {unknown}; known: {', '.join(DEFAULT_PORTS)}")
    plan = [(n, milvus_repeats if n == "milvus" else repeats) for n in dict.fromkeys(engines)]
    results: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="crossfeed-bench-engines-"))
    try:
        total = sum(n for _, n in plan)
        with tqdm(total=total, desc="bench engines", unit="start", disable=not progress) as bar:
            for name, count in plan:
                runs = []
                for _ in range(count):
                    bar.set_postfix_str(name)
                    runs.append(start_once(base, name, tmp))
                    _wipe_data(tmp, name)  # the same binaries, an empty instance
                    bar.update()
                starts = [r["start_s"] for r in runs]
                results[name] = {
                    "runs": runs,
                    "start_s": starts,
                    "prepare_s": [r["prepare_s"] for r in runs],
                    "summary": summarize(starts),
                }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return build_report({"engines": results}, repeats=repeats, milvus_repeats=milvus_repeats)


def build_report(results: dict[str, Any], **parameters: Any) -> BenchReport:
    table = Table(
        "Engine start, spawn -> first real answer (seconds)",
        ["engine", "n", "min", "median", "max", "prepare (first run)"],
    )
    for name, r in results["engines"].items():
        s = r["summary"]
        table.add(name, s["n"], s["min"], s["p50"], s["max"], r["prepare_s"][0])
    notes = [
        "Each start is on spare 127.0.0.1 ports in a temporary state directory whose data "
        "is wiped between starts; "
        "'ready' means Kafka metadata / Milvus list-collections / Redis PING answered.",
        "'prepare' is the time before the spawn (checks, configs; for Milvus unpacking "
        "its binaries on a first run), not part of the start time.",
    ]
    return BenchReport(
        name="engines",
        title="crossfeed bench: engine start times",
        parameters=parameters,
        results=results,
        tables=[table],
        notes=notes,
    )
