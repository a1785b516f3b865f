"""``crossfeed up | down | status``: the local engines (Kafka protocol, Milvus, Redis).

``up`` starts an engine only when the URL it is configured with (``KAFKA_BOOTSTRAP``,
``MILVUS_URI``, ``REDIS_URL``) is not reachable, always on 127.0.0.1, detached, with
its pidfile and log under ``<CROSSFEED_STATE_DIR>/engines/``. It then waits until
every engine answers a real request (Kafka metadata, Milvus list-collections, Redis
PING) and reports how long each took. A second ``up`` changes nothing. ``down``
stops only what ``up`` started (per the pidfiles), never an engine someone else runs.

If ``up`` fails or is interrupted (Ctrl-C), the engines it started in that call are
stopped again, so it either succeeds or leaves things as they were.

Python API (used by ``crossfeed demo`` and the test fixtures)::

    statuses = up(settings, engines=("kafka", "redis"))
    status(settings); down(settings)
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from crossfeed.core.settings import Settings
from crossfeed.exceptions import ConfigError
from crossfeed.ops.engines import launch
from crossfeed.ops.engines.probe import ENGINES, display_url, endpoints, probe
from crossfeed.ops.engines.procs import (
    LaunchSpec,
    PidFiles,
    ProcessRecord,
    busy_ports,
    log_tail,
    reachable,
    record_alive,
    spawn,
    spawned_alive,
    stop,
)
from crossfeed.ops.exceptions import EngineStartError

__all__ = [
    "DEFAULT_TIMEOUTS",
    "ENGINES",
    "EngineStatus",
    "add_commands",
    "display_url",
    "down",
    "endpoints",
    "probe",
    "status",
    "up",
    "wait_ready",
]

log = logging.getLogger(__name__)

# Seconds to wait for readiness after a start; Milvus on 2 busy cores is the slow one.
DEFAULT_TIMEOUTS = {"kafka": 30.0, "milvus": 180.0, "redis": 15.0}


@dataclass
class EngineStatus:
    """One engine as ``up``/``down``/``status`` found or left it."""

    name: str
    url: str  # as configured, password redacted
    reachable: bool
    started_by_us: bool  # a live pidfile in this state directory
    pid: int | None = None
    action: str = "checked"  # started | running | stopped | not-ours | absent | checked
    start_s: float | None = None  # process spawned -> ready, when this call started it
    prepare_s: float | None = None  # unpacking binaries, writing configs before the spawn
    log_path: Path | None = None

    def line(self) -> str:
        state = "reachable" if self.reachable else "unreachable"
        if self.action == "stopped":
            owner = f"stopped (pid {self.pid})"
        elif self.started_by_us:
            owner = f"started by us (pid {self.pid})"
        else:
            owner = "not started by us"
        if self.action == "started" and self.start_s is not None:
            owner += f", ready in {self.start_s:.2f} s"
            if self.prepare_s is not None and self.prepare_s >= 0.5:
                owner += f" (+{self.prepare_s:.1f} s to prepare)"
        return f"{self.name:<7} {self.url:<28} {state:<11} {owner}"


def _check_names(engines: Sequence[str]) -> tuple[str, ...]:
    unknown = [n for n in engines if n not in ENGINES]
    if unknown:
        raise ConfigError(f"unknown engine(s) {unknown}; known: {', '.join(ENGINES)}")
    return tuple(dict.fromkeys(engines))


# --------------------------------------------------------------------------- readiness


@dataclass
class _Pending:
    """One engine being waited for: polled round-robin so each start time is exact."""

    name: str
    t0: float  # launch time (ours) or wait start (someone else's)
    limit: float
    alive: Callable[[], bool] | None = None
    log_path: Path | None = None

    def poll(self, settings: Settings) -> float | None:
        """Seconds since t0 once ready; None while not; raise on death or timeout."""
        reason = probe(self.name, settings)
        elapsed = time.monotonic() - self.t0
        if reason is None:
            return elapsed
        if self.alive is not None and not self.alive():
            tail = log_tail(self.log_path) if self.log_path else ""
            raise EngineStartError(f"{self.name} exited during startup ({reason}). Log:\n{tail}")
        if elapsed > self.limit:
            where = f"; see {self.log_path}" if self.log_path else ""
            raise EngineStartError(
                f"{self.name} not ready after {self.limit:.0f} s ({reason}){where}"
            )
        return None


def _limit(name: str, timeout_s: float | None) -> float:
    return DEFAULT_TIMEOUTS[name] if timeout_s is None else timeout_s


def _wait_all(pending: list[_Pending], settings: Settings) -> dict[str, float]:
    ready: dict[str, float] = {}
    while len(ready) < len(pending):
        for item in pending:
            if item.name not in ready:
                elapsed = item.poll(settings)
                if elapsed is not None:
                    ready[item.name] = elapsed
        if len(ready) < len(pending):
            time.sleep(0.05)
    return ready


def wait_ready(
    name: str,
    settings: Settings,
    *,
    timeout_s: float | None = None,
    alive: Callable[[], bool] | None = None,
    log_path: Path | None = None,
) -> float:
    """Poll until ``name`` answers a real request; return the seconds waited.

    ``alive`` reports whether the process we started still runs: if it dies, fail at
    once with the tail of its log instead of waiting out the timeout.
    """
    item = _Pending(name, time.monotonic(), _limit(name, timeout_s), alive, log_path)
    return _wait_all([item], settings)[name]


def _import_clients(names: Sequence[str]) -> None:
    """Import client libraries up front, so start times measure engines, not imports."""
    modules = {"kafka": "kafka", "milvus": "pymilvus", "redis": "redis"}
    for name in names:
        importlib.import_module(modules[name])


# --------------------------------------------------------------------------- status / up / down


def _settings(settings: Settings | None) -> Settings:
    return settings if settings is not None else Settings()


def _status(name: str, settings: Settings, files: PidFiles) -> EngineStatus:
    eps = endpoints(name, settings)
    record = files.read(name)
    # A record for another port is ours, but is not the engine this URL reaches.
    ours = record is not None and record.port in {ep.port for ep in eps}
    return EngineStatus(
        name=name,
        url=display_url(name, settings),
        reachable=any(reachable(ep) for ep in eps),
        started_by_us=ours,
        pid=record.pid if record and ours else None,
        log_path=files.logfile(name) if ours else None,
    )


def status(
    settings: Settings | None = None, engines: Sequence[str] = ENGINES
) -> list[EngineStatus]:
    """Each engine: URL, TCP reachability, and whether ``up`` (this state dir) started it."""
    settings = _settings(settings)
    files = PidFiles(settings.state.state_dir)
    return [_status(name, settings, files) for name in _check_names(engines)]


def _prepare(name: str, settings: Settings, files: PidFiles) -> tuple[LaunchSpec, int, float]:
    """Everything before the spawn of ``name`` (checks, binaries, configs); returns the
    launch spec, its port and the seconds this took. All engines are prepared before
    any is spawned, so one engine's preparation never counts in another's start time."""
    eps = endpoints(name, settings)
    if len(eps) != 1 or not eps[0].loopback:
        raise EngineStartError(
            f"{name} at {display_url(name, settings)} is unreachable, and up only starts "
            "engines on 127.0.0.1 (a single local address)"
        )
    port = eps[0].port
    t0 = time.monotonic()
    ports = launch.milvus_listen_ports(launch.milvus_ports(port)) if name == "milvus" else [port]
    busy = busy_ports(ports)
    if busy:
        raise EngineStartError(f"{name}: port(s) {busy} already in use on this machine")
    workdir = files.workdir(name)
    if name == "kafka":
        spec = launch.kafka_spec(port, workdir)
    elif name == "milvus":
        spec = launch.milvus_spec(port, workdir)
    else:
        parts = urlsplit(settings.redis.url.get_secret_value())
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        spec = launch.redis_spec(port, workdir, user, password)
    return spec, port, time.monotonic() - t0


def up(
    settings: Settings | None = None,
    engines: Sequence[str] = ENGINES,
    *,
    timeout_s: float | None = None,
) -> list[EngineStatus]:
    """Start what is unreachable, wait until every engine is ready; idempotent.

    Raises :class:`EngineStartError` (after stopping what this call started) when an
    engine cannot start or is not ready within ``timeout_s`` (per-engine defaults).
    """
    settings = _settings(settings)
    names = _check_names(engines)
    files = PidFiles(settings.state.state_dir)
    started: dict[str, tuple[ProcessRecord, float, float]] = {}
    _import_clients(names)
    with files.lock():
        try:
            results = []
            earlier: dict[str, ProcessRecord] = {}
            plans: dict[str, tuple[LaunchSpec, int, float]] = {}
            for name in names:
                st = _status(name, settings, files)
                record = files.read(name)
                if record is not None and not st.reachable:
                    _check_same_port(name, record, settings)
                    earlier[name] = record  # ours, still starting (or hung): wait for it
                if st.reachable or record is not None:
                    st.action = "running"
                else:
                    plans[name] = _prepare(name, settings, files)
                results.append(st)
            for st in results:
                if st.name in plans:
                    spec, port, st.prepare_s = plans[st.name]
                    t_spawn = time.monotonic()
                    started[st.name] = (spawn(st.name, spec, files, port), t_spawn, st.prepare_s)
                    st.started_by_us, st.pid = True, started[st.name][0].pid
                    st.action, st.log_path = "started", files.logfile(st.name)
            pending = []
            for st in results:
                alive: Callable[[], bool] | None = None
                t0 = time.monotonic()
                if st.name in started:
                    record, t0, _ = started[st.name]
                    alive = functools.partial(spawned_alive, record.pid)
                elif st.name in earlier:
                    alive = functools.partial(record_alive, earlier[st.name])
                limit = _limit(st.name, timeout_s)
                pending.append(_Pending(st.name, t0, limit, alive, st.log_path))
            ready = _wait_all(pending, settings)
            for st in results:
                st.reachable = True
                if st.name in started:
                    st.start_s = ready[st.name]
                    log.info("%s ready in %.2f s (pid %d)", st.name, st.start_s, st.pid)
            return results
        except BaseException:
            for name, (record, _, _) in started.items():
                log.warning("stopping %s (pid %d) started by this failed up", name, record.pid)
                try:
                    stop(record, files, timeout_s=10.0)
                except Exception:  # keep rolling back the others; re-raise the cause
                    log.exception("could not stop %s", name)
            raise


def _check_same_port(name: str, record: ProcessRecord, settings: Settings) -> None:
    port = endpoints(name, settings)[0].port
    if record.port != port:
        raise EngineStartError(
            f"{name} was started on port {record.port} (pid {record.pid}) by an earlier up "
            f"with this state directory, but is now configured on port {port}: run "
            f"`crossfeed down {name}` first, or use another CROSSFEED_STATE_DIR"
        )


def down(
    settings: Settings | None = None,
    engines: Sequence[str] = ENGINES,
    *,
    timeout_s: float = 30.0,
) -> list[EngineStatus]:
    """Stop the engines ``up`` started from this state directory; leave all others."""
    settings = _settings(settings)
    names = _check_names(engines)
    files = PidFiles(settings.state.state_dir)
    results = []
    with files.lock():
        for name in names:
            record = files.read(name)
            if record is None:
                action = "not-ours" if _status(name, settings, files).reachable else "absent"
            else:
                stop(record, files, timeout_s=timeout_s)
                action = "stopped"
            st = _status(name, settings, files)
            st.action = action
            if record is not None:
                st.pid = record.pid
            results.append(st)
    return results


# --------------------------------------------------------------------------- CLI


def add_commands(sub: argparse._SubParsersAction) -> None:
    engine_help = f"engines (default: all of {', '.join(ENGINES)})"
    p = sub.add_parser("up", help="start the local engines that are not reachable")
    p.add_argument("engines", nargs="*", metavar="ENGINE", help=engine_help)
    p.add_argument("--timeout", type=float, default=None, help="readiness timeout per engine (s)")
    p.set_defaults(func=_cmd_up)

    p = sub.add_parser("down", help="stop the engines that up started")
    p.add_argument("engines", nargs="*", metavar="ENGINE", help=engine_help)
    p.add_argument("--timeout", type=float, default=30.0, help="SIGTERM grace period (s)")
    p.set_defaults(func=_cmd_down)

    p = sub.add_parser(
        "status", help="show each engine (URL, reachable, started by us) and each connector"
    )
    p.add_argument("engines", nargs="*", metavar="ENGINE", help=engine_help)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_status)


def _quiet_clients(args: argparse.Namespace) -> None:
    """kafka-python logs every connection at INFO; keep ``up`` output readable."""
    if not getattr(args, "verbose", False):
        for name in ("kafka", "pymilvus"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _cmd_up(args: argparse.Namespace) -> int:
    _quiet_clients(args)
    for st in up(None, args.engines or ENGINES, timeout_s=args.timeout):
        print(st.line())
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    for st in down(None, args.engines or ENGINES, timeout_s=args.timeout):
        print(st.line())
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    """Exit 0 when every engine is reachable, 1 otherwise (handy in scripts). Connectors
    (``crossfeed ingest``) of this state directory follow the engines: their liveness."""
    from crossfeed.core.settings import StateSettings
    from crossfeed.sources.state import read_statuses

    statuses = status(None, args.engines or ENGINES)
    sources = [] if args.engines else read_statuses(StateSettings().state_dir)
    if args.json:
        rows = [{**asdict(st), "log_path": str(st.log_path or "")} for st in statuses]
        rows += [
            {"name": f"source:{src.source}", "alive": src.alive(), **src.to_json()}
            for src in sources
        ]
        print(json.dumps(rows, indent=1))
    else:
        for st in statuses:
            print(st.line())
        for src in sources:
            print(src.line())
    return 0 if all(st.reachable for st in statuses) else 1
