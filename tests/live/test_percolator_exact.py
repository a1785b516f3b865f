"""The two-stage percolator finds exactly the matches of the full product, exact scores.

Every test compares :meth:`Percolator.match` with a reference that scores every
(subscription, row) pair in float64, applies the thresholds and filters and keeps each
post's best row; banks are big enough (>= SCREEN_MIN) to go through the int8 pass.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from crossfeed.indexer.base import IndexRow, SearchFilter
from crossfeed.indexer.filters import matches
from crossfeed.live.base import Subscription
from crossfeed.live.memory import MemorySubscriptions
from crossfeed.live.percolator import Percolator, _unit
from crossfeed.live.screen import SCREEN_MIN, Int8Pass

N = SCREEN_MIN + 500


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def make_sub(
    i: int, vec: np.ndarray, min_score: float, version: str = "v", **flt: Any
) -> Subscription:
    return Subscription(
        id=f"s{i}",
        name=f"s{i}",
        kind="text",
        query="q",
        min_score=float(min_score),
        filter=SearchFilter(model_version=version, **flt),
        filters={},
        vector=np.asarray(vec, dtype=np.float32),
        model_version=version,
        created_at_ms=0,
    )


def make_row(
    post: str, vec: np.ndarray, *, version: str = "v", item: int = 0, **kw: Any
) -> IndexRow:
    modality = str(kw.pop("modality", "text"))
    return IndexRow(
        row_id=f"{post}:{modality}:{item}",
        post_id=post,
        item=item,
        modality=modality,
        vector=[float(x) for x in vec],
        created_at_ms=int(kw.pop("created_at_ms", 1_000)),
        author="a",
        text="t",
        tags=tuple(kw.pop("tags", ())),
        lang=str(kw.pop("lang", "en")),
        model_version=version,
        media_ref="",
    )


def reference(subs: list[Subscription], rows: list[IndexRow]) -> dict[tuple[str, str], float]:
    """Every pair scored on its own in float64; thresholds, filters, best row per post."""
    best: dict[tuple[str, str], float] = {}

    def as_unit(vec: Any) -> np.ndarray:
        return _unit(np.asarray(vec, dtype=np.float32)[None, :])[0].astype(np.float64)

    row_vecs = [as_unit(r.vector) for r in rows]
    for sub in subs:
        q = as_unit(sub.vector)
        for row, v in zip(rows, row_vecs, strict=True):
            if row.model_version != sub.model_version or v.size != q.size:
                continue
            score = float(np.dot(q, v))
            if score >= sub.min_score and matches(row, sub.filter):
                key = (sub.id, row.post_id)
                best[key] = max(best.get(key, -2.0), score)
    return best


async def percolator(subs: list[Subscription], **kw: Any) -> tuple[Percolator, MemorySubscriptions]:
    store = MemorySubscriptions()
    for s in subs:
        await store.create(s, limit=10**6)
    perc = Percolator(store, **kw)
    perc.refresh()
    return perc, store


def found(perc: Percolator, rows: list[IndexRow]) -> dict[tuple[str, str], float]:
    return {(m.sub_id, m.post_id): m.score for m in perc.match(rows)}


def assert_same(got: dict[tuple[str, str], float], want: dict[tuple[str, str], float]) -> None:
    assert set(got) == set(want)
    for key, score in want.items():
        assert got[key] == pytest.approx(score, abs=1e-12)


def clustered(rng: np.random.Generator, n: int, d: int, centres: np.ndarray) -> np.ndarray:
    """Vectors near a few centres, like embeddings of related texts."""
    pick = rng.integers(0, len(centres), n)
    return unit(centres[pick] + rng.standard_normal((n, d)) * 0.6 / np.sqrt(d))


async def test_random_and_clustered_banks_match_exactly_like_the_full_product() -> None:
    rng = np.random.default_rng(0)
    d = 96
    centres = unit(rng.standard_normal((20, d)))
    vecs = np.concatenate(
        [clustered(rng, N - 500, d, centres), unit(rng.standard_normal((500, d)))]
    )
    subs = [make_sub(i, v, rng.uniform(0.2, 0.9)) for i, v in enumerate(vecs)]
    perc, _ = await percolator(subs)
    assert perc.screened
    for b in range(3):
        rows = [make_row(f"b{b}p{i}", v) for i, v in enumerate(clustered(rng, 32, d, centres))]
        rows += [make_row(f"b{b}r{i}", v) for i, v in enumerate(unit(rng.standard_normal((8, d))))]
        want = reference(subs, rows)
        assert want  # the case is not vacuous
        assert_same(found(perc, rows), want)
        assert perc.screened  # the bound held: no fallback to the float32 pass


async def test_thresholds_a_hair_from_the_scores_are_decided_exactly() -> None:
    """Thresholds 1e-9 below / above real pair scores: inside any approximation's error."""
    rng = np.random.default_rng(1)
    d = 64
    centres = unit(rng.standard_normal((10, d)))
    vecs = clustered(rng, N, d, centres)
    rows = [make_row(f"p{i}", v) for i, v in enumerate(clustered(rng, 32, d, centres))]
    row_vecs = np.stack([_unit(np.asarray([r.vector], np.float32))[0] for r in rows])
    scores = _unit(vecs).astype(np.float64) @ row_vecs.T.astype(np.float64)
    best = scores.max(axis=1)
    offsets = np.where(np.arange(N) % 2 == 0, -1e-9, 1e-9)  # half just match, half just miss
    subs = [make_sub(i, v, best[i] + offsets[i]) for i, v in enumerate(vecs)]
    perc, _ = await percolator(subs)
    assert perc.screened
    want = reference(subs, rows)
    assert len({s for s, _ in want}) == N // 2 + N % 2
    assert_same(found(perc, rows), want)
    assert perc.screened  # the bound held: no fallback to the float32 pass


async def test_a_pair_exactly_at_the_threshold_matches_and_one_ulp_above_does_not() -> None:
    d = 8
    q = np.array([0.5, 0.5, 0.5, 0.5, 0, 0, 0, 0], dtype=np.float32)  # unit, exact
    v = np.array([0.5, 0.5, 0.5, -0.5, 0, 0, 0, 0], dtype=np.float32)  # q.v = 0.5 exactly
    rng = np.random.default_rng(2)
    filler = unit(rng.standard_normal((N, d)))
    subs = [make_sub(i, f, 0.999) for i, f in enumerate(filler)]
    subs += [make_sub(N, q, 0.5), make_sub(N + 1, q, np.nextafter(0.5, 1.0))]
    perc, _ = await percolator(subs)
    assert perc.screened
    got = found(perc, [make_row("at", v)])
    assert got.get(("s" + str(N), "at")) == 0.5
    assert ("s" + str(N + 1), "at") not in got


async def test_all_positive_vectors_do_not_overflow_the_int8_sums() -> None:
    """The worst case for an int8 kernel (every product at its maximum, same sign): a
    kernel whose sums saturated would score this pair ~0.5 and rule it out silently."""
    d = 384
    ones = np.full(d, 1 / np.sqrt(d), dtype=np.float32)
    rng = np.random.default_rng(3)
    subs = [make_sub(i, f, 0.99) for i, f in enumerate(unit(rng.standard_normal((N, d))))]
    subs.append(make_sub(N, ones, 0.999))
    perc, _ = await percolator(subs)
    assert perc.screened
    got = found(perc, [make_row("flat", ones)])
    assert got == {(f"s{N}", "flat"): pytest.approx(1.0, abs=1e-6)}


async def test_the_int8_and_the_float32_first_pass_give_the_same_matches() -> None:
    rng = np.random.default_rng(4)
    d = 128
    centres = unit(rng.standard_normal((15, d)))
    subs = [
        make_sub(i, v, rng.uniform(0.3, 0.8)) for i, v in enumerate(clustered(rng, N, d, centres))
    ]
    rows = [make_row(f"p{i}", v) for i, v in enumerate(clustered(rng, 32, d, centres))]
    screened, _ = await percolator(subs)
    plain, _ = await percolator(subs, screen=False, blas_threads=0)
    assert screened.screened and not plain.screened
    # The same pairs; scores equal up to float64 rounding (the exact products run over
    # different sets of subscriptions, so BLAS may sum in another order).
    assert_same(found(screened, rows), found(plain, rows))


async def test_filters_versions_and_reload_keep_the_matches_exact() -> None:
    rng = np.random.default_rng(5)
    d = 48
    centres = unit(rng.standard_normal((8, d)))
    vecs = clustered(rng, N, d, centres)
    kinds: list[dict[str, Any]] = [
        {},
        {"lang": "fr"},
        {"tags": ("pets",)},
        {"modalities": ("image",)},
        {"since_ms": 5_000},
        {"exclude_post_ids": ("p3",)},
    ]
    subs = [
        make_sub(i, v, rng.uniform(0.3, 0.8), **kinds[i % len(kinds)]) for i, v in enumerate(vecs)
    ]
    other = [make_sub(10**6 + i, v, 0.3, version="w") for i, v in enumerate(vecs[:50])]
    rows = []
    for i, v in enumerate(clustered(rng, 32, d, centres)):
        rows.append(
            make_row(
                f"p{i % 20}",  # posts with several rows: the best one counts
                v,
                item=i,
                modality=("text", "image")[i % 2],
                lang=("en", "fr")[i % 3 == 0],
                tags=("pets",) if i % 4 == 0 else (),
                created_at_ms=1_000 + 1_000 * i,
                version=("v", "w")[i % 5 == 0],
            )
        )
    everyone = subs + other
    perc, store = await percolator(everyone)
    assert perc.screened and perc.active == len(everyone)
    want = reference(everyone, rows)
    assert {s.startswith("s1000") for s, _ in want} == {True, False}  # both versions match
    assert_same(found(perc, rows), want)
    for s in subs[:300]:
        await store.delete(s.id)
    added = [make_sub(2 * 10**6 + i, v, 0.4) for i, v in enumerate(clustered(rng, 40, d, centres))]
    for s in added:
        await store.create(s, limit=10**6)
    assert perc.refresh() is True
    now = subs[300:] + other + added
    assert_same(found(perc, rows), reference(now, rows))


async def test_a_broken_bound_is_caught_and_the_batch_matched_again_exactly(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(6)
    d = 32
    centres = unit(rng.standard_normal((5, d)))
    subs = [
        make_sub(i, v, rng.uniform(0.3, 0.7)) for i, v in enumerate(clustered(rng, N, d, centres))
    ]
    rows = [make_row(f"p{i}", v) for i, v in enumerate(clustered(rng, 32, d, centres))]
    perc, _ = await percolator(subs)
    assert perc.screened
    honest = Int8Pass.scores

    def off_by_a_lot(self: Int8Pass, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        approx, bound = honest(self, vectors)
        return approx + 3 * bound[:, None], bound  # claims more than it knows

    monkeypatch.setattr(Int8Pass, "scores", off_by_a_lot)
    with caplog.at_level(logging.ERROR, logger="crossfeed.live.percolator"):
        got = found(perc, rows)
    assert "broke its error bound" in caplog.text
    assert not perc.screened
    assert_same(got, reference(subs, rows))


async def test_a_row_with_a_non_finite_vector_matches_nothing_and_keeps_the_screen() -> None:
    rng = np.random.default_rng(7)
    d = 16
    vecs = unit(rng.standard_normal((N, d)))
    subs = [make_sub(i, v, 0.5) for i, v in enumerate(vecs)]
    perc, _ = await percolator(subs)
    bad = make_row("nan", np.full(d, np.nan))
    good = make_row("ok", vecs[7])
    got = found(perc, [bad, good])
    assert ("s7", "ok") in got and all(p != "nan" for _, p in got)
    assert perc.screened
