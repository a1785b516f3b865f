"""``crossfeed bench soak``: is memory flat under steady load?

On a private pipeline (the run's own topics, consumer group, collection and Redis
prefix; removed afterwards) it starts one ``crossfeed worker`` process and one API
process (``crossfeed serve --no-workers`` on a free loopback port, pointed at the same
private names), measures the maximum text ingest rate with a burst (unless ``--rate`` is
given), and then for ``--duration`` seconds:

- produces posts at half that rate: random-word texts, and every ``image_every``-th post
  a corpus picture with a fresh text (so it is embedded, not dropped as a repost);
- runs text searches against the API at ``search_rate`` per second, alternating between
  a small pool of repeated texts (served from the cache after their first time) and new
  texts (embedded and searched each time);
- samples the RSS of the worker and of the API process (each with its descendants)
  every ``sample_s`` seconds.

Afterwards it waits for every produced post to be searchable (``lost`` counts those that
never were) and reports, per process, RSS at the end of the warm-up, at the end, the
maximum, the growth fraction, a robust growth and a fitted slope
(:func:`crossfeed.ops.bench.rss.rss_stats`); ``results["rss_growth"]`` is the larger of
the two growth fractions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from crossfeed.core.schema import Post
from crossfeed.core.settings import Settings
from crossfeed.ops.bench.live import LivePipeline, log_tail, worker_env
from crossfeed.ops.bench.push import WORDS, _filler_text, _post, _produce, max_ingest_rate
from crossfeed.ops.bench.report import BenchReport, free_port
from crossfeed.ops.bench.rss import RssSampler, rss_stats, worst_growth
from crossfeed.ops.bench.soak_report import build_report, windows
from crossfeed.ops.exceptions import BenchError

log = logging.getLogger(__name__)

SERVE_ARGV = (sys.executable, "-m", "crossfeed.ops.cli", "serve", "--no-workers")
STALL_S = 30.0  # no progress for this long is reported as a stall


@dataclass(frozen=True)
class SoakConfig:
    duration_s: float = 600.0
    warmup_s: float | None = None  # None: a quarter of the duration, at most 120 s
    rate: float | None = None  # posts/s; None: half the measured maximum
    burst: int = 300
    search_rate: float = 2.0
    image_every: int = 20  # 0: text posts only
    sample_s: float = 5.0
    drain_s: float = 180.0
    seed: int = 0

    @property
    def warmup(self) -> float:
        if self.warmup_s is not None:
            return self.warmup_s
        return min(120.0, self.duration_s / 4)

    def check(self) -> None:
        if self.duration_s <= 0 or self.sample_s <= 0 or self.search_rate < 0:
            raise BenchError("--duration and --sample must be positive, --search-rate >= 0")
        if not 0 <= self.warmup < self.duration_s:
            raise BenchError("--warmup must be >= 0 and shorter than --duration")
        if (self.duration_s - self.warmup) < 3 * self.sample_s:
            raise BenchError("need at least 3 RSS samples after the warm-up: lengthen --duration")
        if self.rate is not None and self.rate <= 0:
            raise BenchError("--rate must be positive (or auto)")
        if self.burst < 10 or self.image_every < 0 or self.drain_s < 0:
            raise BenchError("need --burst >= 10, --image-every >= 0, --drain >= 0")


def _pdeathsig() -> None:  # pragma: no cover - runs in the child before exec
    """The API child gets SIGTERM when this process dies, so no API outlives a killed bench."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


@dataclass
class ApiProcess:
    proc: subprocess.Popen
    url: str
    log_path: Path
    start_s: float | None = None

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(
                f"the API process exited with status {self.proc.returncode}; "
                f"log tail:\n{log_tail(self.log_path)}"
            )

    def wait_ready(self, timeout_s: float, check: Callable[[], None] = lambda: None) -> float:
        """Wait for ``/readyz`` to answer 200; seconds since the process started."""
        import httpx

        t0 = time.monotonic()
        while True:
            self.check_alive()
            check()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=5, trust_env=False).status_code == 200:
                    return time.monotonic() - t0
            if time.monotonic() - t0 > timeout_s:
                raise BenchError(f"the API was not ready within {timeout_s:.0f} s")
            time.sleep(0.5)


@contextlib.contextmanager
def api_process(settings: Settings, log_path: Path) -> Iterator[ApiProcess]:
    """``crossfeed serve --no-workers`` on a free loopback port, on ``settings``' names."""
    from crossfeed.ops.run.processes import stop_processes

    port = free_port()
    env = {
        **os.environ,
        **worker_env(settings),
        "CROSSFEED_API_HOST": "127.0.0.1",
        "CROSSFEED_API_PORT": str(port),
        "CROSSFEED_API_AUTH": "off",  # loopback only
        "CROSSFEED_WORKER_METRICS_PORT": "0",
    }
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            list(SERVE_ARGV),
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_pdeathsig,  # only sets the death signal
        )
    try:
        yield ApiProcess(proc, f"http://127.0.0.1:{port}", log_path)
    finally:
        stop_processes([proc], timeout=30.0)


# --------------------------------------------------------------------------- load


@dataclass
class Load:
    """What the load threads did, shared with the main loop (appends only)."""

    sent: dict[str, float] = field(default_factory=dict)  # post id -> monotonic send time
    images: int = 0
    visible: dict[str, float] = field(default_factory=dict)  # post id -> first seen
    searches: list[tuple[float, float, bool, bool]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the last few search errors
    produce_error: BaseException | None = None


def _posts(
    cfg: SoakConfig, rate: float, images: list[Post], load: Load, stop: threading.Event
) -> Iterator[Post]:
    """Posts at ``rate`` per second until ``stop``; their send times go to ``load.sent``."""
    rng = np.random.default_rng(cfg.seed)
    nonce = uuid.uuid4().hex[:6]
    t0 = time.monotonic()
    i = 0
    while not stop.is_set():
        delay = t0 + i / rate - time.monotonic()
        if delay > 0 and stop.wait(delay):
            return
        pid = f"soak-{nonce}-{i}"
        if images and cfg.image_every and i % cfg.image_every == cfg.image_every - 1:
            src = images[(i // cfg.image_every) % len(images)]
            text = f"{src.text} soak {i}".strip()
            post = src.model_copy(update={"id": pid, "text": text, "created_at": datetime.now(UTC)})
            load.images += 1
        else:
            # the nonce: the max-rate burst draws its texts from the same seed, and an
            # equal text would be dropped as a repost (and counted lost here)
            post = _post(pid, f"{_filler_text(rng, i)} {nonce}")
        load.sent[pid] = time.monotonic()
        yield post
        i += 1


def _produce_thread(live: LivePipeline, posts: Iterator[Post], load: Load) -> threading.Thread:
    def run() -> None:
        try:
            _produce(live, posts)
        except BaseException as exc:  # surfaced by the main loop
            load.produce_error = exc

    return threading.Thread(target=run, name="soak-produce", daemon=True)


def _search_thread(
    url: str, cfg: SoakConfig, load: Load, stop: threading.Event
) -> threading.Thread:
    """Text searches at ``cfg.search_rate``, in threes: a text from a pool of 20, the same
    text again at once, and a new text. The cache is keyed by the index epoch, which
    every indexed batch moves, so under steady ingest mostly the immediate repeat hits."""
    import httpx

    rng = np.random.default_rng(cfg.seed + 1)
    pool = [" ".join(rng.choice(WORDS, size=3)) + " photo" for _ in range(20)]

    def run() -> None:
        t0 = time.monotonic()
        with httpx.Client(base_url=url, timeout=60.0, trust_env=False) as client:
            i = 0
            while not stop.is_set():
                delay = t0 + i / cfg.search_rate - time.monotonic()
                if i % 3 != 1 and delay > 0 and stop.wait(delay):
                    return
                text = pool[(i // 3) % len(pool)] if i % 3 != 2 else _filler_text(rng, i)
                start = time.monotonic()
                ok, cached = False, False
                try:
                    r = client.post("/v1/search", json={"text": text, "top_k": 10})
                    ok = r.status_code == 200
                    cached = ok and bool(r.json().get("cached"))
                    if not ok:
                        load.errors = [*load.errors[-4:], f"HTTP {r.status_code} {r.text[:200]}"]
                except httpx.HTTPError as exc:
                    load.errors = [*load.errors[-4:], f"{type(exc).__name__}: {exc}"]
                load.searches.append((start, (time.monotonic() - start) * 1000, ok, cached))
                i += 1

    return threading.Thread(target=run, name="soak-search", daemon=True)


def _watch_rows(live: LivePipeline, load: Load, stop: threading.Event) -> threading.Thread:
    """Polls Milvus for the produced posts until ``stop``: when each became searchable."""

    def run() -> None:
        while not stop.is_set():
            pending = [p for p in list(load.sent) if p not in load.visible]
            for chunk in range(0, len(pending), 1000):
                counts = live.probe.rows_by_post(pending[chunk : chunk + 1000])
                now = time.monotonic()
                load.visible.update({p: now for p, n in counts.items() if n >= 1})
            stop.wait(0.5)

    return threading.Thread(target=run, name="soak-rows", daemon=True)


# --------------------------------------------------------------------------- run


class Progress:
    """A progress line every ``every_s``; a warning when ingest or search stalls."""

    def __init__(self, enabled: bool, duration_s: float, warmup_s: float, every_s: float = 30.0):
        self.enabled, self.duration_s, self.warmup_s = enabled, duration_s, warmup_s
        self.every_s = every_s
        self._last_print = -every_s
        self._last_visible, self._visible_at = 0, 0.0
        self._last_ok, self._ok_at = 0, 0.0
        self.stalls: list[str] = []
        self._started = False

    def say(self, msg: str) -> None:
        if self.enabled:
            print(f"soak: {msg}", file=sys.stderr, flush=True)

    def tick(self, t: float, load: Load, rss: dict[str, float]) -> None:
        now = time.monotonic()
        if not self._started:  # stalls count from the first tick, when the load starts
            self._started, self._visible_at, self._ok_at = True, now, now
        visible, sent = len(load.visible), len(load.sent)
        ok = sum(1 for s in load.searches if s[2])
        if visible > self._last_visible or visible >= sent:
            self._last_visible, self._visible_at = visible, now
        elif now - self._visible_at >= STALL_S:
            self._stall(
                t,
                f"no post became searchable for {now - self._visible_at:.0f} s "
                f"({sent - visible} waiting): the worker is behind or stuck",
            )
            self._visible_at = now
        if ok > self._last_ok or not load.searches:
            self._last_ok, self._ok_at = ok, now
        elif now - self._ok_at >= STALL_S:
            last = load.errors[-1] if load.errors else "no answer (slow requests)"
            self._stall(t, f"no search answered for {now - self._ok_at:.0f} s: {last}")
            self._ok_at = now
        if t - self._last_print >= self.every_s:
            self._last_print = t
            phase = "warm-up" if t < self.warmup_s else "measuring"
            mem = ", ".join(f"{k} {v:.0f} MB" for k, v in rss.items())
            self.say(
                f"{t:4.0f}/{self.duration_s:.0f} s ({phase}): {sent} posts sent, "
                f"{visible} searchable, {len(load.searches)} searches "
                f"({len(load.searches) - ok} failed); RSS {mem}"
            )

    def _stall(self, t: float, why: str) -> None:
        self.stalls.append(f"at {t:.0f} s: {why}")
        self.say(f"stall at {t:.0f} s: {why}")


def run_soak(
    base: Settings,
    out: Path,
    cfg: SoakConfig,
    images: list[Post] | None = None,
    media_roots: list[Path] | None = None,
    *,
    progress: bool = True,
) -> BenchReport:
    """The whole soak on a private pipeline (removed afterwards); see the module doc."""
    from crossfeed.ops.bench.live import BenchNames, bench_settings, live_pipeline

    cfg.check()
    images = list(images or []) if cfg.image_every else []
    names = BenchNames.new()
    settings = bench_settings(base, names, media_roots or [])
    show = Progress(progress, cfg.duration_s, cfg.warmup)
    results: dict[str, Any] = {"collection": names.collection}
    with (
        live_pipeline(settings, names, out / "soak-worker.log") as live,
        api_process(settings, out / "soak-api.log") as api,
    ):
        show.say("starting a worker and an API process (models load in both)")
        warm = _post(f"warm-{uuid.uuid4().hex[:6]}", "warm up post #hello")
        _produce(live, iter([warm]))
        t0 = time.monotonic()
        while warm.id not in live.probe.rows_by_post([warm.id]):
            live.check_alive()
            api.check_alive()
            if time.monotonic() - t0 > 600:
                raise BenchError("the worker indexed nothing within 600 s")
            time.sleep(0.5)
        results["worker_ready_s"] = round(time.monotonic() - live.started_at, 1)
        results["api_ready_s"] = round(api.wait_ready(600, live.check_alive), 1)
        if cfg.rate is None:
            show.say(f"measuring the maximum text ingest rate ({cfg.burst} posts)")
            results["max_ingest"] = max_ingest_rate(live, cfg.burst, cfg.seed)
            rate = results["max_ingest"]["posts_per_s"] / 2
        else:
            rate = cfg.rate
        results["rate_posts_per_s"] = rate
        results["warmup_s"] = cfg.warmup
        show.say(
            f"soak: {cfg.duration_s:.0f} s at {rate:.1f} posts/s and "
            f"{cfg.search_rate:g} searches/s; warm-up {cfg.warmup:.0f} s"
        )
        _soak(live, api, cfg, rate, images, show, results)
    results["cleaned_up"] = True
    return build_report(results, cfg=cfg, model_version=base.encoder.model_version)


def _soak(
    live: LivePipeline,
    api: ApiProcess,
    cfg: SoakConfig,
    rate: float,
    images: list[Post],
    show: Progress,
    results: dict[str, Any],
) -> None:
    load = Load()
    stop_load, stop_rows = threading.Event(), threading.Event()
    pids = {"worker": live.proc.pid if live.proc else 0, "api": api.proc.pid}
    sampler = RssSampler(pids)
    loads: list[float] = []
    threads = [
        _produce_thread(live, _posts(cfg, rate, images, load, stop_load), load),
        _search_thread(api.url, cfg, load, stop_load),
        _watch_rows(live, load, stop_rows),
    ]
    t_start = time.monotonic()
    sampler.t0 = t_start
    for th in threads:
        th.start()
    try:
        next_at = t_start
        while (t := time.monotonic() - t_start) < cfg.duration_s:
            live.check_alive()
            api.check_alive()
            if load.produce_error is not None:
                raise BenchError(f"producing posts failed: {load.produce_error}")
            show.tick(t, load, sampler.sample())
            loads.append(os.getloadavg()[0])  # other work on the machine, during the load
            next_at += cfg.sample_s
            time.sleep(max(0.0, min(next_at, t_start + cfg.duration_s) - time.monotonic()))
        sampler.sample()  # the end of the load
    finally:
        stop_load.set()
        threads[0].join(timeout=60)
        threads[1].join(timeout=60)
    elapsed = time.monotonic() - t_start
    show.say(f"load stopped after {elapsed:.0f} s; waiting for the last posts")
    drain_start = time.monotonic()
    while len(load.visible) < len(load.sent) and time.monotonic() < drain_start + cfg.drain_s:
        live.check_alive()
        time.sleep(0.5)
    results["drain_s"] = round(time.monotonic() - drain_start, 1)
    stop_rows.set()
    threads[2].join(timeout=30)
    results.update(summarize_load(load, t_start, elapsed, cfg))
    results["stalls"] = show.stalls
    results["load_avg_1m"] = {"mean": float(np.mean(loads)), "max": max(loads)}
    results["rss"] = {
        name: {
            "pid": pid,
            "descendants_max": sampler.children[name],
            "samples": [[round(t, 2), round(mb, 2)] for t, mb in sampler.samples[name]],
            **rss_stats(sampler.samples[name], cfg.warmup),
        }
        for name, pid in pids.items()
    }
    results["rss_growth"] = worst_growth(results["rss"])
    results["rss_growth_robust"] = worst_growth(results["rss"], "growth_robust")


def summarize_load(load: Load, t_start: float, elapsed: float, cfg: SoakConfig) -> dict[str, Any]:
    """Posts produced/searchable/lost, freshness and searches, overall and per minute."""
    sent = dict(load.sent)
    fresh = [(t - t_start, load.visible[p] - t) for p, t in sent.items() if p in load.visible]
    searches = [(s - t_start, ms, ok, cached) for s, ms, ok, cached in load.searches]
    ok_ms = [ms for _, ms, ok, _ in searches if ok]
    width = 60.0 if elapsed >= 240 else max(cfg.sample_s, elapsed / 4)
    return {
        "elapsed_s": round(elapsed, 1),
        "posts": {
            "produced": len(sent),
            "images": load.images,
            "searchable": sum(1 for p in sent if p in load.visible),
            "lost": sum(1 for p in sent if p not in load.visible),
            "produced_per_s": len(sent) / elapsed if elapsed > 0 else None,
        },
        "freshness_s": _quantiles([f for _, f in fresh]),
        "searches": {
            "requests": len(searches),
            "errors": sum(1 for s in searches if not s[2]),
            "cached": sum(1 for s in searches if s[3]),
            "per_s": len(searches) / elapsed if elapsed > 0 else None,
            "latency_ms": _quantiles(ok_ms),
            "last_errors": load.errors,
        },
        "timeline": windows(
            width,
            elapsed,
            indexed=[load.visible[p] - t_start for p in sent if p in load.visible],
            searches=[(t, ms) for t, ms, ok, _ in searches if ok],
            errors=[t for t, _, ok, _ in searches if not ok],
        ),
    }


def _quantiles(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    arr = np.asarray(values, dtype=float)
    return {
        "n": len(values),
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "max": float(arr.max()),
    }
