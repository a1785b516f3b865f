"""``bench live``'s standing-query part: filler vectors and the report's tables."""

from __future__ import annotations

import numpy as np

from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.ops.bench.output import render_markdown
from crossfeed.ops.bench.push import build_report
from crossfeed.ops.bench.standing import TOPICS, filler_vectors


def test_filler_vectors_are_distinct_unit_points_between_real_query_embeddings() -> None:
    emb = HashingEmbedder(dim=32)
    vectors = filler_vectors(emb, 500, seed=1)
    assert vectors.shape == (500, 32) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert len({v.tobytes() for v in vectors}) == 500
    assert np.array_equal(vectors, filler_vectors(emb, 500, seed=1))
    # each one lies in the span of the query embeddings it was mixed from
    queries = np.asarray(
        emb.embed_texts([f"{a} {b}" for i, a in enumerate(TOPICS) for b in TOPICS[i + 1 :]])
    )
    best = (vectors @ queries.T).max(axis=1)
    assert best.min() > 0.7


def _summary(mean: float) -> dict[str, float]:
    return {"n": 3, "min": mean, "p50": mean, "p95": mean, "max": mean, "mean": mean, "sd": 0.0}


def test_the_report_shows_the_index_cost_and_the_matching_micro_benchmark() -> None:
    latency = {
        "probes": 3,
        "searchable_s": _summary(1.0),
        "sse_s": _summary(1.1),
        "missed_sse": 0,
    }
    results = {
        "max_ingest": {"posts_per_s": 30.0},
        "rate_posts_per_s": 15.0,
        "latency": {"1": latency, "10000": latency},
        "index_cost": {
            "subscriptions": 9999,
            "rows_per_s": {"without": _summary(1000.0), "with": _summary(900.0)},
            "throughput_ratio": 0.9,
            "cpu_ms_per_batch": {"without": _summary(5.0), "with": _summary(8.0)},
            "matches_per_batch": 1.5,
            "wait_after_upsert_ms": 0.7,
        },
        "match_cost": {
            "subscriptions": 9999,
            "screened": True,
            "ms_per_batch": {
                k: _summary(v)
                for k, v in (("product_default", 12.0), ("product_1", 7.0), ("percolator", 3.0))
            },
            "cpu_ms_per_batch": {
                k: _summary(v)
                for k, v in (("product_default", 14.0), ("product_1", 7.0), ("percolator", 3.0))
            },
        },
    }
    md = render_markdown(build_report(results))
    assert "percolator.match (int8 pass + exact)" in md
    assert "| 9999 | 900 |" in md
    assert "8.0 ms with 9,999 subscriptions" in md
