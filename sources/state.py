"""What a connector keeps on disk: its cursor, and a status file ``crossfeed status`` reads.

Both live under ``<CROSSFEED_STATE_DIR>/sources/``, named after the connector and a
short hash of the endpoint it reads (two connectors on two instances never share a
cursor). Files are replaced atomically (write, fsync, rename), so a crash leaves the
previous version, never half of one. The status file never holds a token.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# A running connector rewrites its status every couple of seconds; older than this
# (and its process gone) it is shown as stopped.
STALE_AFTER_S = 15.0


def sources_dir(state_dir: Path) -> Path:
    return state_dir / "sources"


def endpoint_key(source: str, endpoint: str) -> str:
    """``bluesky-1a2b3c4d``: stable per connector and endpoint."""
    digest = hashlib.sha256(endpoint.encode("utf-8")).hexdigest()[:8]
    return f"{source}-{digest}"


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class CursorStore:
    """One connector's resume position (a JSON value), persisted after each flush."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Any:
        data = read_json(self.path)
        return None if data is None else data.get("cursor")

    def save(self, cursor: Any) -> None:
        write_json_atomic(self.path, {"cursor": cursor, "saved_at": time.time()})


@dataclass
class SourceStatus:
    """A connector's state as its status file records it (times are unix seconds)."""

    source: str
    endpoint: str
    pid: int
    started_at: float
    updated_at: float
    running: bool = True
    connected: bool = False
    last_event_at: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    cursor: Any = None
    metrics_url: str | None = None
    stopped_reason: str | None = None

    def alive(self, now: float | None = None) -> bool:
        """Running per the file, its process exists, and it wrote recently."""
        now = time.time() if now is None else now
        if not self.running or now - self.updated_at > STALE_AFTER_S:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def line(self, now: float | None = None) -> str:
        """One line for ``crossfeed status``."""
        now = time.time() if now is None else now
        name = f"{self.source:<9} {self.endpoint:<40}"
        posts = self.counts.get("post", 0)
        deletes = self.counts.get("delete", 0)
        tally = f"{posts} posts, {deletes} deletes"
        if not self.alive(now):
            why = f" ({self.stopped_reason})" if self.stopped_reason else ""
            ago = _ago(now - self.updated_at)
            return f"{name} stopped {ago} ago{why}; {tally}"
        since = (
            "no event yet"
            if self.last_event_at is None
            else (f"last event {_ago(now - self.last_event_at)} ago")
        )
        link = "connected" if self.connected else "reconnecting"
        metrics = f", metrics {self.metrics_url}" if self.metrics_url else ""
        return f"{name} running (pid {self.pid}), {link}, {since}; {tally}{metrics}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def write_status(path: Path, status: SourceStatus) -> None:
    write_json_atomic(path, status.to_json())


def read_statuses(state_dir: Path) -> list[SourceStatus]:
    """Every connector status file under the state directory, newest first."""
    out: list[SourceStatus] = []
    folder = sources_dir(state_dir)
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.status.json")):
        data = read_json(path)
        if data is None:
            continue
        try:
            out.append(SourceStatus(**data))
        except TypeError:
            continue  # a file of another version: not ours to interpret
    return sorted(out, key=lambda s: -s.updated_at)
