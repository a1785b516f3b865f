"""``crossfeed bench ingest --trends compare``: the comparison and its report (no engines)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crossfeed.core.settings import Settings
from crossfeed.ops.bench.live import worker_env
from crossfeed.ops.bench.output import write_report
from crossfeed.ops.bench.trends import build_trends_report, compare, with_trends


def _run(text: float, image: float, keys: int = 0) -> dict[str, Any]:
    phases = {
        "text": {"rows_per_s": text, "rows": 100, "seconds": 100 / text},
        "image": {"rows_per_s": image, "rows": 50, "seconds": 50 / image},
    }
    rows, seconds = 150, 100 / text + 50 / image
    return {
        "phases": phases,
        "overall": {"rows_per_s": rows / seconds},
        "trend_keys": keys,
    }


def test_overhead_is_one_minus_the_ratio_of_median_rates() -> None:
    runs = {
        "off": [_run(100.0, 10.0), _run(120.0, 12.0), _run(80.0, 11.0)],
        "on": [_run(95.0, 10.0, 40), _run(90.0, 11.0, 41), _run(500.0, 9.0, 39)],
    }
    c = compare(runs)
    assert c["text"]["rows_per_s_off"] == 100.0 and c["text"]["rows_per_s_on"] == 95.0
    assert c["text"]["overhead"] == pytest.approx(0.05)
    assert c["image"]["on_vs_off"] == pytest.approx(10.0 / 11.0)
    assert set(c) == {"text", "image", "all"}


def test_report_writes_json_markdown_and_png(tmp_path: Path) -> None:
    runs = {"off": [_run(100.0, 10.0)], "on": [_run(97.0, 9.9, 12)]}
    report = build_trends_report({"runs": runs, "comparison": compare(runs)}, rounds=1)
    paths = write_report(report, tmp_path)
    assert {"json", "md", "png"} <= set(paths)
    md = paths["md"].read_text()
    assert "+3.0 %" in md and "rows/s on" in md


def test_the_worker_gets_the_trends_switch() -> None:
    settings = Settings()
    assert worker_env(with_trends(settings, enabled=False))["CROSSFEED_TRENDS"] == "0"
    assert worker_env(with_trends(settings, enabled=True))["CROSSFEED_TRENDS"] == "1"
    assert settings.trends.enabled  # the copy, not the original, was switched
