"""The headline figures of ``crossfeed bench all``, each read from its part's results
and set beside its target.

:func:`figures` works on ``{part: results}`` (the ``results`` dict of each part's
report, as ``all.json`` keeps them), so the table can be rebuilt from a saved report. A
figure whose part did not run (skipped, or not in this build) is None, and so is its
``met``. The ingest ratios divide a modality's end-to-end rows/s (the ingest part) by the
encoder's own rate for it (the encoders part's median items/s, same machine and thread
count, same run); they exist only when both parts ran.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Results = dict[str, dict[str, Any]]

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
}


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    source: str  # where it comes from: the part and the bench command
    op: str | None = None  # None: reported, no target
    bound: float | None = None
    read: Callable[[Results], float | None] = lambda r: None

    @property
    def target(self) -> dict[str, Any] | None:
        if self.op is None or self.bound is None:
            return None
        return {"op": self.op, "value": self.bound, "unit": self.unit}

    def met(self, value: float | None) -> bool | None:
        if value is None or self.op is None or self.bound is None:
            return None
        return bool(_OPS[self.op](value, self.bound))


def dig(data: Any, *path: str) -> Any:
    """``data[path[0]][path[1]]...``, or None where a key is missing or a value is None."""
    for key in path:
        if not isinstance(data, dict) or data.get(key) is None:
            return None
        data = data[key]
    return data


def _num(value: Any) -> float | None:
    """A number as it was (an int stays an int), None for anything else."""
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _ingest_ratio(modality: str) -> Callable[[Results], float | None]:
    def read(r: Results) -> float | None:
        # Posts (items) per second, like the encoder's rate: a video is one item to the
        # encoder but several rows in the index (its moments).
        posts = _num(dig(r, "ingest", "phases", modality, "posts"))
        seconds = _num(dig(r, "ingest", "phases", modality, "seconds"))
        encoder = _num(dig(r, "encoders", "throughput", modality, "summary", "p50"))
        if posts is None or not seconds or not encoder:
            return None
        return posts / seconds / encoder

    return read


def _speedup(modality: str) -> Callable[[Results], float | None]:
    return lambda r: _num(dig(r, "encoders", "speedup", modality))


def _path(*path: str) -> Callable[[Results], float | None]:
    return lambda r: _num(dig(r, *path))


def _half_load(r: Results) -> float | None:
    """Produce -> searchable p95 of the live part's run with one standing query."""
    return _num(dig(r, "live", "latency", "1", "searchable_s", "p95"))


def _two_worker_lost(r: Results) -> float | None:
    return _num(dig(r, "workers", "two_worker_lost"))


_INGEST = "ingest rows/s / encoders items/s (bench ingest, bench encoders)"
_SCALE = "scale (bench query --rows)"
FIGURES: tuple[Figure, ...] = (
    Figure("text_ingest_ratio", "text ingest / encoder rate", "x", _INGEST, ">=", 0.85,
           _ingest_ratio("text")),
    Figure("image_ingest_ratio", "image ingest / encoder rate", "x", _INGEST, ">=", 0.85,
           _ingest_ratio("image")),
    Figure("video_ingest_ratio", "video ingest / encoder rate", "x", _INGEST, ">=", 0.85,
           _ingest_ratio("video")),
    Figure("text_encoder_speedup", "text encoder ONNX / torch", "x", "encoders", ">=", 2.0,
           _speedup("text")),
    Figure("image_encoder_speedup", "image encoder ONNX / torch", "x", "encoders", ">=", 2.0,
           _speedup("image")),
    Figure("video_encoder_speedup", "video encoder ONNX / torch", "x", "encoders", ">=", 2.0,
           _speedup("video")),
    Figure("freshness_p95_idle_s", "freshness p95, idle", "s", "ingest (idle pipeline)", "<=",
           1.0, _path("ingest", "freshness_idle_s", "summary", "p95")),
    Figure("freshness_p95_half_load_s", "freshness p95, half the max ingest rate", "s",
           "live (bench live, 1 standing query)", "<=", 2.0, _half_load),
    Figure("query_uncached_p50_ms", "uncached text query p50", "ms", _SCALE, "<=", 15.0,
           _path("scale", "latency", "uncached", "p50")),
    Figure("query_cached_p50_ms", "cached text query p50", "ms", _SCALE, "<=", 2.0,
           _path("scale", "latency", "cached", "p50")),
    Figure("recall_at_10", "recall@10 vs exact search", "", _SCALE, ">=", 0.95,
           _path("scale", "recall", "none", "mean")),
    Figure("soak_rss_growth", "soak RSS growth", "fraction", "soak", "<=", 0.10,
           _path("soak", "rss_growth")),
    Figure("two_worker_lost", "posts lost, 1 of 2 workers killed", "posts", "workers", "==",
           0.0, _two_worker_lost),
    Figure("two_worker_speedup", "2 workers / 1 worker, text rows/s", "x", "workers",
           read=_path("workers", "speedup")),
)  # fmt: skip


def figures(results: Results) -> dict[str, Any]:
    """``{key: value}`` for every figure, plus ``targets``, ``met`` (True/False, None when
    not measured or without a target) and ``scale_rows`` (the index size of the query
    figures)."""
    out: dict[str, Any] = {}
    targets: dict[str, Any] = {}
    met: dict[str, bool | None] = {}
    for fig in FIGURES:
        value = fig.read(results)
        out[fig.key] = value
        if fig.target is not None:
            targets[fig.key] = fig.target
            met[fig.key] = fig.met(value)
    out["scale_rows"] = dig(results, "scale", "rows")
    out["targets"] = targets
    out["met"] = met
    return out
