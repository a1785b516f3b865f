"""``crossfeed bench``: statistics, report files, naming, phase splitting; one live run.

Speed is never asserted: the integration test checks that a real ``bench query``
run produces a report of the expected shape with positive measurements, and that
it removed the collection it created.
"""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from crossfeed.core.schema import MediaItem, Post
from crossfeed.core.settings import Settings
from crossfeed.ops.bench.corpus import expected_rows
from crossfeed.ops.bench.engines import MILVUS_PORT_RANGE, engine_settings, pick_milvus_port
from crossfeed.ops.bench.ingest import FreshnessTracker, split_phases
from crossfeed.ops.bench.live import BenchNames, bench_settings, worker_env
from crossfeed.ops.bench.output import render_markdown, write_report
from crossfeed.ops.bench.query import text_queries
from crossfeed.ops.bench.report import BenchReport, Table, fmt, percentile, rate, ratio, summarize
from crossfeed.ops.bench.summary import combine, headline
from crossfeed.ops.exceptions import BenchError

TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
COLLECTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


# --------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("q", [0, 5, 25, 50, 75, 95, 100])
def test_percentile_matches_numpy_linear(q: float) -> None:
    rng = random.Random(q)
    values = [rng.uniform(-5, 50) for _ in range(rng.randint(1, 40))]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_small_samples() -> None:
    assert percentile([7.0], 95) == 7.0
    assert percentile([1, 3], 50) == 2.0
    assert percentile([4, 1, 3, 2], 0) == 1.0
    assert percentile([4, 1, 3, 2], 100) == 4.0


@pytest.mark.parametrize(
    ("values", "q"), [([], 50), ([1.0], -1), ([1.0], 101), ([1.0, float("nan")], 50)]
)
def test_percentile_rejects_bad_input(values: list[float], q: float) -> None:
    with pytest.raises(ValueError):
        percentile(values, q)


def test_summarize() -> None:
    s = summarize([3, 1, 2, 10])
    assert s == {
        "n": 4,
        "min": 1.0,
        "p50": 2.5,
        "p95": pytest.approx(8.95),
        "max": 10.0,
        "mean": 4.0,
    }
    with pytest.raises(ValueError):
        summarize([])


def test_ratio_and_rate_never_divide_by_zero() -> None:
    assert ratio(10, 4) == 2.5
    assert ratio(None, 4) is None
    assert ratio(1, None) is None
    assert ratio(1, 0) is None
    assert rate(30, 2.0) == 15.0
    assert rate(30, 0.0) is None


def test_fmt() -> None:
    assert fmt(None) == "-"
    assert fmt(12) == "12"
    assert fmt(0.0) == "0"
    assert fmt(0.012345) == "0.0123"
    assert fmt(1234.5678) == "1,235"
    assert fmt(True) == "yes"
    assert fmt(float("inf")) == "-"
    assert fmt("a|b\nc") == "a\\|b c"


# --------------------------------------------------------------------------- reports


def test_table_rejects_rows_of_the_wrong_width() -> None:
    with pytest.raises(ValueError):
        Table("t", ["a", "b"], [[1]])
    table = Table("t", ["a", "b"])
    with pytest.raises(ValueError):
        table.add(1, 2, 3)


def test_table_markdown() -> None:
    table = Table("Speeds", ["name", "value"], note="a note")
    table.add("text", 123.456)
    lines = table.markdown().splitlines()
    assert lines[0] == "### Speeds"
    assert lines[2] == "| name | value |"
    assert lines[3] == "|---|---|"
    assert lines[4] == "| text | 123 |"
    assert lines[-1] == "a note"


def _engines_report() -> BenchReport:
    starts = {"kafka": [0.2, 0.3, 0.25], "milvus": [30.0]}
    results = {
        "engines": {
            n: {"start_s": v, "prepare_s": [0.1] * len(v), "summary": summarize(v)}
            for n, v in starts.items()
        }
    }
    table = Table(
        "starts", ["engine", "median"], [[n, summarize(v)["p50"]] for n, v in starts.items()]
    )
    return BenchReport("engines", "bench: engines", {"repeats": 3}, results, [table], ["n1"])


def _query_report() -> BenchReport:
    def entry(samples: list[float], hits: int) -> dict:
        return {"summary": summarize(samples), "samples_ms": samples, "cache_hits": hits}

    kinds = {
        "text": {
            "uncached": entry([40.0, 50.0, 60.0], 0),
            "cached": entry([2.0, 3.0, 4.0], 3),
            "ratio_p50": 50.0 / 3.0,
        }
    }
    return BenchReport("query", "bench: query", {}, {"kinds": kinds}, [], [])


def test_write_report_files_and_shape(tmp_path: Path) -> None:
    report = _engines_report()
    paths = write_report(report, tmp_path / "out")
    assert set(paths) == {"json", "md", "png"}
    data = json.loads(paths["json"].read_text())
    assert set(data) >= {"report_version", "bench", "created_at", "parameters", "results", "notes"}
    assert data["bench"] == "engines"
    assert data["results"]["engines"]["kafka"]["summary"]["p50"] == 0.25
    md = paths["md"].read_text()
    assert md.startswith("# bench: engines")
    assert "| kafka | 0.250 |" in md
    assert "![engines](engines.png)" in md
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_write_report_without_png(tmp_path: Path) -> None:
    paths = write_report(_engines_report(), tmp_path, png=False)
    assert "png" not in paths
    assert "![" not in paths["md"].read_text()


def test_write_report_skips_png_when_nothing_to_plot(tmp_path: Path) -> None:
    report = BenchReport("query", "empty", results={"kinds": {}})
    paths = write_report(report, tmp_path)
    assert "png" not in paths
    assert not (tmp_path / "query.png").exists()


def test_report_name_must_be_safe(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_report(BenchReport("../x", "bad"), tmp_path)


def test_combine_keeps_each_bench_and_draws_all_panels(tmp_path: Path) -> None:
    reports = {"engines": _engines_report(), "query": _query_report()}
    combined = combine(reports)
    assert combined.name == "all"
    assert set(combined.results) == {"engines", "query", "figures"}
    assert [t.title for t in combined.tables[:2]] == ["Figures and targets", "Headline numbers"]
    assert any(t.title == "engines: starts" for t in combined.tables)
    assert "engines: n1" in combined.notes
    measures = [row[0] for row in headline(reports).rows]
    assert "kafka start (median)" in measures
    assert "query text cached p50" in measures
    paths = write_report(combined, tmp_path)
    assert paths["png"].stat().st_size > 0
    assert "### Headline numbers" in render_markdown(combined)


# --------------------------------------------------------------------------- naming


def test_bench_names_are_valid_and_unique() -> None:
    a, b = BenchNames.new(), BenchNames.new()
    assert a != b
    for topic in a.topics.values():
        assert TOPIC.match(topic) and topic.startswith(a.base + ".")
    assert COLLECTION.match(a.collection)
    assert a.redis_prefix.startswith("crossfeed-bench-")
    with pytest.raises(ValueError):
        BenchNames("../etc")


def test_bench_settings_override_without_touching_the_base() -> None:
    base = Settings()
    names = BenchNames("abc123")
    s = bench_settings(base, names, [Path("/srv/media")])
    assert s.kafka.topic_raw == "crossfeed_bench_abc123.raw"
    assert s.milvus.collection == "crossfeed_bench_abc123"
    assert s.redis.key_prefix == "crossfeed-bench-abc123"
    assert s.stream.app_id == "crossfeed-bench-abc123"
    assert s.kafka.bootstrap == base.kafka.bootstrap
    assert base.kafka.topic_raw != s.kafka.topic_raw
    assert base.milvus.collection != s.milvus.collection
    env = worker_env(s)
    assert env["CROSSFEED_TOPIC_DEADLETTER"] == "crossfeed_bench_abc123.deadletter"
    assert env["CROSSFEED_COLLECTION"] == "crossfeed_bench_abc123"
    assert json.loads(env["CROSSFEED_MEDIA_ROOTS"]) == ["/srv/media"]
    assert env["CROSSFEED_MODELS_DIR"] == str(base.models_dir)


def test_milvus_port_block_avoids_the_default_instance() -> None:
    from crossfeed.ops.engines.launch import MILVUS_DEFAULT_PORTS, milvus_ports

    for seed in range(20):
        port = pick_milvus_port(random.Random(seed))
        assert MILVUS_PORT_RANGE[0] <= port <= MILVUS_PORT_RANGE[1]
        assert not set(milvus_ports(port).values()) & set(MILVUS_DEFAULT_PORTS.values())


@pytest.mark.parametrize(("name", "port"), [("kafka", 9092), ("redis", 6379), ("milvus", 19530)])
def test_engine_settings_refuse_default_ports(name: str, port: int, tmp_path: Path) -> None:
    with pytest.raises(BenchError):
        engine_settings(Settings(), name, tmp_path, port)


def test_engine_settings_point_at_the_spare_port(tmp_path: Path) -> None:
    base = Settings()
    s = engine_settings(base, "redis", tmp_path, 16380)
    assert s.redis.url.get_secret_value() == "redis://127.0.0.1:16380/0"
    assert s.state.state_dir == tmp_path
    assert s.kafka is base.kafka and base.redis.url != s.redis.url


# --------------------------------------------------------------------------- ingest phases


def _post(i: int, kind: str | None, text: str = "") -> Post:
    media = [MediaItem(kind=kind, path=f"/m/{i}.bin")] if kind else []
    return Post(
        id=f"p{i}",
        source="t",
        author="a",
        created_at=datetime(2024, 1, 1, tzinfo=UTC),
        text=text or f"post number {i}",
        tags=["x"],
        media=media,
    )


def test_split_phases() -> None:
    posts = [_post(i, "image") for i in range(6)] + [_post(9, "video"), _post(10, None)]
    held, phases = split_phases(posts, holdout=2)
    assert [p.id for p in held] == ["p0", "p1"]
    assert [p.id for p in phases["text"]] == ["p2-t", "p3-t", "p4-t", "p5-t", "p9-t", "p10-t"]
    assert all(not p.media for p in phases["text"])
    assert [p.id for p in phases["image"]] == ["p2-i", "p3-i", "p4-i", "p5-i"]
    assert [p.id for p in phases["video"]] == ["p9-v"]
    for p in phases["image"] + phases["video"]:
        assert p.text == "" and p.tags == [] and len(p.media) == 1


def test_split_phases_leaves_out_what_the_pipeline_drops() -> None:
    posts = [_post(i, "image") for i in range(4)]
    posts.append(_post(4, None, text="post number 3"))  # same text and tags as p3: a repost
    posts.append(
        _post(5, None, text="@someone https://example.com").model_copy(update={"tags": []})
    )
    held, phases = split_phases(posts, holdout=1)
    assert [p.id for p in held] == ["p0"]
    assert [p.id for p in phases["text"]] == ["p1-t", "p2-t", "p3-t"]
    assert [p.id for p in phases["image"]] == ["p1-i", "p2-i", "p3-i"]
    assert [expected_rows(p) for p in held] == [2]


def test_freshness_tracker() -> None:
    tracker = FreshnessTracker()
    tracker.add("a", expected=2, sent=10.0)
    tracker.add("b", expected=1, sent=11.0)
    tracker.update({"a": 1, "b": 1}, now=12.0)
    assert tracker.pending() == ["a"]
    tracker.update({"a": 2, "zzz": 5}, now=13.5)
    assert tracker.pending() == []
    tracker.update({"a": 2}, now=99.0)  # the first time seen counts
    assert sorted(tracker.latencies()) == [1.0, 3.5]


def test_text_queries_are_distinct_after_normalisation() -> None:
    posts = [_post(i, None, text="Red  Car" if i % 2 else "red car") for i in range(4)]
    queries = text_queries(posts, 5)
    assert len(queries) == 5
    assert len({" ".join(q.split()).lower() for q in queries}) == 5


def test_cli_rejects_unknown_parts() -> None:
    from crossfeed.ops.cli import main

    assert main(["bench", "all", "--skip", "bogus", "--no-progress"]) == 1
    assert main(["bench", "engines", "--engines", "postgres", "--no-progress"]) == 1


def test_pin_model_version(tmp_path: Path) -> None:
    from crossfeed.core.settings import EncoderSettings
    from crossfeed.encoders.heads import FALLBACK_VERSION
    from crossfeed.ops.bench.live import pin_model_version

    base = Settings()
    base.encoder = EncoderSettings(models_dir=tmp_path / "none", model_version="latest")
    assert pin_model_version(base).encoder.model_version == FALLBACK_VERSION
    assert base.encoder.model_version == "latest"
    base.encoder = EncoderSettings(models_dir=tmp_path, model_version="v-fixed")
    assert pin_model_version(base).encoder.model_version == "v-fixed"


# --------------------------------------------------------------------------- integration


@pytest.mark.integration
@pytest.mark.slow
def test_bench_query_end_to_end(engines: object, tmp_path: Path) -> None:
    """A tiny corpus through the real pipeline, then real HTTP queries against it."""
    from crossfeed.ops.bench.live import RowProbe
    from crossfeed.ops.cli import main

    out = tmp_path / "bench"
    argv = ["bench", "query", "--out", str(out), "--limit", "20", "--queries", "5"]
    argv += ["--query-images", "3", "--no-progress"]
    assert main(argv) == 0
    data = json.loads((out / "query.json").read_text())
    assert data["bench"] == "query"
    results = data["results"]
    assert results["index_rows"] > 0
    assert set(results["kinds"]) == {"text", "image", "post"}
    for kind, entry in results["kinds"].items():
        for mode in ("uncached", "cached"):
            s = entry[mode]["summary"]
            assert s["n"] == entry[mode]["requests"] > 0, kind
            assert 0 < s["min"] <= s["p50"] <= s["p95"] <= s["max"], kind
        assert entry["cached"]["cache_hits"] == entry["cached"]["requests"], kind
        assert entry["uncached"]["cache_hits"] == 0, kind
        assert entry["ratio_p50"] > 0
    assert (out / "query.md").read_text().startswith("# crossfeed bench: query latency")
    assert (out / "query.png").stat().st_size > 0
    settings = Settings()
    settings.milvus = settings.milvus.model_copy(update={"collection": results["collection"]})
    probe = RowProbe(settings)
    try:
        assert not probe.exists(), "the bench left its collection behind"
    finally:
        probe.close()


@pytest.mark.integration
@pytest.mark.slow
def test_bench_query_at_scale_end_to_end(engines: object, tmp_path: Path) -> None:
    """``bench query --rows N`` (N small here): rows written, latency, recall against
    exact search, throughput per client count, and nothing left behind."""
    from crossfeed.ops.bench.live import RowProbe
    from crossfeed.ops.cli import main

    out = tmp_path / "bench"
    argv = ["bench", "query", "--rows", "1000", "--out", str(out), "--limit", "20"]
    argv += ["--queries", "5", "--query-images", "3", "--requests", "8"]
    argv += ["--concurrency", "1,2", "--no-progress"]
    assert main(argv) == 0
    data = json.loads((out / "query_scale.json").read_text())
    assert data["bench"] == "query_scale"
    results = data["results"]
    assert results["rows"] == 1000 and results["bases"] > 0
    lat = results["latency"]
    assert lat["uncached"]["cache_hits"] == 0 and lat["cached"]["cache_hits"] == lat["cached"]["n"]
    assert {"filtered by source", "filtered by time"} <= set(lat)
    assert results["recall"]["none"]["mean"] >= 0.9  # 1,000 rows: the index is near exact
    levels = {(e["clients"], e["mode"]) for e in results["throughput"]}
    assert levels == {(c, m) for c in (1, 2) for m in ("uncached", "cached")}
    assert all(e["errors"] == 0 and e["ok"] == 8 for e in results["throughput"])
    assert (out / "query_scale.png").stat().st_size > 0
    settings = Settings()
    settings.milvus = settings.milvus.model_copy(update={"collection": results["collection"]})
    probe = RowProbe(settings)
    try:
        assert not probe.exists(), "the bench left its collection behind"
    finally:
        probe.close()
