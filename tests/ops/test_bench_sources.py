"""``crossfeed bench sources``: its synthetic frames read as intended; the report draws."""

from __future__ import annotations

from pathlib import Path

from crossfeed.ops.bench.output import write_report
from crossfeed.ops.bench.report import BenchReport, summarize
from crossfeed.ops.bench.sources import synthetic_frames
from crossfeed.sources.base import Erase, Produce
from crossfeed.sources.jetstream import BlobUrls, parse_message


def test_synthetic_frames_are_posts_and_deletes_jetstream_would_send() -> None:
    frames = synthetic_frames(400, seed=3)
    assert frames == synthetic_frames(400, seed=3)  # deterministic
    events = [parse_message(f, BlobUrls()).event for f in frames]
    posts = [e.post for e in events if isinstance(e, Produce)]
    deletes = [e for e in events if isinstance(e, Erase)]
    assert len(posts) + len(deletes) == 400  # nothing malformed or skipped
    assert 0 < len(deletes) < 40 and all(p.tags for p in posts)
    with_media = [p for p in posts if p.media]
    assert 40 < len(with_media) < 160
    assert {m.kind for p in with_media for m in p.media} == {"image", "video"}
    assert {d.post_id for d in deletes} <= {p.id for p in posts}


def test_report_draws_its_panel(tmp_path: Path) -> None:
    results = {
        "modes": {
            name: {"events_per_s": v, "summary": summarize(v)}
            for name, v in (("connector", [4000.0, 4200.0]), ("connector + Kafka", [1300.0]))
        }
    }
    report = BenchReport(name="sources", title="t", results=results)
    paths = write_report(report, tmp_path)
    assert paths["png"].stat().st_size > 1000
