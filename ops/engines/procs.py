"""Process plumbing for the local engines: endpoints, pidfiles, spawn, stop, lock.

Why pidfiles carry more than a pid: pids are reused. A record also keeps the
executable path and the kernel start time of the process, and a pid only counts
as "ours" while all three still match, so ``down`` can never signal a stranger
that happens to have inherited an old pid.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from crossfeed.exceptions import ConfigError
from crossfeed.ops.exceptions import EngineStartError, EngineStopError

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})
# Engines are only ever started on this address, whatever the URL says.
BIND_HOST = "127.0.0.1"
# Logs above this size are rotated (one old copy kept) when an engine starts.
_MAX_LOG_BYTES = 50 * 1024 * 1024

# Popen handles of the engines this process spawned, so that stopping one can reap
# it (no zombies in long pytest sessions) and so Popen's destructor never warns.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class Endpoint:
    """One ``host:port`` an engine is reached at."""

    host: str
    port: int

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_port(text: str, what: str) -> int:
    """A TCP port from a URL fragment; a clear :class:`ConfigError` otherwise."""
    try:
        port = int(text)
    except ValueError:
        raise ConfigError(f"{what}: port {text!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"{what}: port {port} is outside 1-65535")
    return port


def reachable(endpoint: Endpoint, timeout_s: float = 0.5) -> bool:
    """True when something accepts TCP connections at ``endpoint``."""
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout_s):
            return True
    except OSError:
        return False


def busy_ports(ports: Sequence[int]) -> list[int]:
    """Ports some process listens on (on any address), so a new engine cannot bind them.

    SO_REUSEADDR makes sockets lingering in TIME_WAIT not count as busy, which is
    what the engines themselves see when they bind.
    """
    busy = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("", port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                busy.append(port)
    return busy


# --------------------------------------------------------------------------- records


@dataclass
class ProcessRecord:
    """What a pidfile says about an engine that ``up`` started."""

    name: str
    pid: int
    exe: str
    start_ticks: int | None
    port: int
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    argv: list[str] = field(default_factory=list)


def _proc_start_ticks(pid: int) -> int | None:
    """Kernel start time of ``pid`` (clock ticks since boot), None off Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])  # field 22 overall


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[0]


def _reap(pid: int) -> None:
    """Collect the exit status of ``pid`` when it is our child, so it leaves no zombie."""
    proc = _CHILDREN.get(pid)
    if proc is not None:
        if proc.poll() is not None:
            _CHILDREN.pop(pid, None)
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie whose threads have all exited."""
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if _proc_state(pid) != "Z":
        return True
    # A multi-threaded process's leader shows "Z" while its other threads are still
    # exiting, and until the last one is gone the process keeps its sockets (its ports).
    try:
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


def spawned_alive(pid: int) -> bool:
    """True while a process this interpreter spawned runs (exact even before its exec)."""
    proc = _CHILDREN.get(pid)
    return proc is not None and proc.poll() is None


def record_alive(record: ProcessRecord) -> bool:
    """True when the recorded process still runs *and* is the same process (see module doc)."""
    if not pid_alive(record.pid):
        return False
    if Path("/proc").is_dir():
        try:
            exe = os.path.realpath(os.readlink(f"/proc/{record.pid}/exe"))
        except OSError:
            return False
        if exe != record.exe:
            return False
        if record.start_ticks is not None and _proc_start_ticks(record.pid) != record.start_ticks:
            return False
    return True


class PidFiles:
    """Pidfiles and logs of one state directory: ``<state_dir>/engines/<name>.{pid,log}``."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir).expanduser().absolute() / "engines"

    def ensure(self) -> Path:
        """Create the directory, private to this user (pidfiles, configs, secrets)."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.dir.is_dir():
            raise ConfigError(f"state directory {self.dir} is not a directory")
        return self.dir

    def pidfile(self, name: str) -> Path:
        return self.dir / f"{name}.pid"

    def logfile(self, name: str) -> Path:
        return self.dir / f"{name}.log"

    def workdir(self, name: str) -> Path:
        """A private directory for an engine's data and generated configs."""
        path = self.ensure() / name
        path.mkdir(exist_ok=True, mode=0o700)
        return path

    def read(self, name: str) -> ProcessRecord | None:
        """The live record of ``name``; a stale or unreadable pidfile is removed."""
        path = self.pidfile(name)
        try:
            data = json.loads(path.read_text())
            record = ProcessRecord(**data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            log.warning("removing unreadable pidfile %s: %s", path, exc)
            path.unlink(missing_ok=True)
            return None
        if not record_alive(record):
            log.info("removing stale pidfile %s (pid %d is gone)", path, record.pid)
            path.unlink(missing_ok=True)
            return None
        return record

    def write(self, record: ProcessRecord) -> None:
        """Write atomically, so a reader never sees half a record."""
        path = self.pidfile(record.name)
        tmp = path.with_suffix(f".pid.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(record), indent=1))
        os.replace(tmp, path)

    def remove(self, name: str) -> None:
        self.pidfile(name).unlink(missing_ok=True)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise ``up``/``down`` on one state directory (two terminals, two pytests)."""
        path = self.ensure() / ".lock"
        with open(path, "a+b") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("waiting for another crossfeed up/down on %s", self.dir)
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- spawn / stop


@dataclass(frozen=True)
class LaunchSpec:
    """How to run one engine: argv, working directory, extra environment."""

    argv: list[str]
    cwd: Path
    env: Mapping[str, str] = field(default_factory=dict)


def _rotate(log_path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if log_path.stat().st_size > _MAX_LOG_BYTES:
            os.replace(log_path, log_path.with_suffix(".log.1"))


def spawn(name: str, spec: LaunchSpec, files: PidFiles, port: int) -> ProcessRecord:
    """Start ``spec`` detached (own session: it outlives us and ignores our Ctrl-C),
    output appended to the engine's log, and write its pidfile."""
    files.ensure()
    log_path = files.logfile(name)
    _rotate(log_path)
    env = {**os.environ, **spec.env}
    with open(log_path, "ab") as out:
        out.write(f"\n=== {datetime.now(UTC).isoformat()} {' '.join(spec.argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(
                spec.argv,
                cwd=spec.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise EngineStartError(f"{name}: cannot run {spec.argv[0]}: {exc}") from exc
    _CHILDREN[proc.pid] = proc
    record = ProcessRecord(
        name=name,
        pid=proc.pid,
        exe=os.path.realpath(spec.argv[0]),
        start_ticks=_proc_start_ticks(proc.pid),
        port=port,
        argv=list(spec.argv),
    )
    files.write(record)
    return record


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, for error messages that say *why* an engine died."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 8192))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _signal(record: ProcessRecord, sig: signal.Signals) -> None:
    """Signal the engine's whole process group when it leads one (its helpers die too)."""
    with contextlib.suppress(ProcessLookupError):
        try:
            leads_group = os.getpgid(record.pid) == record.pid
        except ProcessLookupError:
            return
        if leads_group:
            os.killpg(record.pid, sig)
        else:
            os.kill(record.pid, sig)


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


def stop(record: ProcessRecord, files: PidFiles, timeout_s: float = 30.0) -> bool:
    """SIGTERM, then SIGKILL after ``timeout_s``; remove the pidfile. False if it was gone."""
    if not record_alive(record):
        files.remove(record.name)
        return False
    _signal(record, signal.SIGTERM)
    if not _wait_gone(record.pid, timeout_s):
        log.warning(
            "%s (pid %d) ignored SIGTERM for %.0f s: SIGKILL", record.name, record.pid, timeout_s
        )
        _signal(record, signal.SIGKILL)
        if not _wait_gone(record.pid, 10.0):
            raise EngineStopError(f"{record.name} (pid {record.pid}) survived SIGKILL")
    _CHILDREN.pop(record.pid, None)
    files.remove(record.name)
    return True
