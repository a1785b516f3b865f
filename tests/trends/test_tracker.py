"""The tracker on the in-memory store: what counts, what flags, what does not."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from crossfeed.core.settings import Settings
from crossfeed.trends.base import Observation
from crossfeed.trends.exceptions import InvalidTrendQueryError
from crossfeed.trends.score import BurstParams, baseline, burst
from crossfeed.trends.store import MemoryStore
from crossfeed.trends.tracker import StoreTracker, TrackerParams, open_tracker, parse_trend_id

W = 60.0
T0 = 1_700_000_040.0  # a window boundary


def _vec(seed: int, dim: int = 16) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def _background(tracker: StoreTracker, windows: int, *, tag: str = "cats") -> None:
    """Each window: two authors post ``tag``, plus chatter on other tags."""
    for w in range(windows):
        t = T0 + w * W
        batch = [
            Observation(f"bg-{w}-{i}", f"u{(w * 7 + i) % 50}", t + i, hashtags=(tag,))
            for i in range(2)
        ]
        batch += [
            Observation(f"bg-{w}-x{i}", f"v{i}", t + 10 + i, hashtags=(f"misc{(w + i) % 9}",))
            for i in range(3)
        ]
        tracker.observe(batch)


def _burst(tracker: StoreTracker, window: int, tag: str, authors: int, **kw: object) -> None:
    t = T0 + window * W
    tracker.observe(
        [
            Observation(f"b-{window}-{tag}-{i}", f"fan{i}", t + 1 + i * 0.1, hashtags=(tag,), **kw)  # type: ignore[arg-type]
            for i in range(authors)
        ]
    )


@pytest.fixture
def tracker() -> StoreTracker:
    return StoreTracker(MemoryStore(), TrackerParams(window_s=W, late_s=120.0))


def test_a_hashtag_burst_flags_and_reads_back(tracker: StoreTracker) -> None:
    _background(tracker, 40)
    assert tracker.current(now=T0 + 39 * W + 59) == []
    _burst(tracker, 40, "cats", 20)
    found = tracker.current(now=T0 + 40 * W + 59)
    assert [v.id for v in found] == ["h:cats"]
    view = found[0]
    assert view.kind == "hashtag" and view.label == "cats"
    assert view.rate == 20 and 1.0 < view.baseline < 3.0
    assert view.series[-1] == 20 and view.series[-2] == 2
    assert view.first_detected == T0 + 40 * W
    assert tracker.get("h:cats") is not None
    assert len(tracker.member_ids("h:cats")) >= 20
    assert tracker.get("h:dogs") is None and tracker.member_ids("h:dogs") == []


def test_one_author_posting_200_times_is_no_trend(tracker: StoreTracker) -> None:
    _background(tracker, 30)
    t = T0 + 30 * W
    tracker.observe(
        [Observation(f"spam-{i}", "spammer", t + i * 0.2, hashtags=("buynow",)) for i in range(200)]
    )
    assert tracker.current(now=t + 59) == []
    assert tracker.store.counts([int(t // W)])[0]["h:buynow"] == 1


def test_replayed_batch_counts_once(tracker: StoreTracker) -> None:
    batch = [Observation(f"p{i}", f"a{i}", T0 + i, hashtags=("x",)) for i in range(5)]
    tracker.observe(batch)
    tracker.observe(batch)
    assert tracker.store.counts([0 + int(T0 // W)])[0]["h:x"] == 5


def test_reposts_count_for_the_original_once_per_author(tracker: StoreTracker) -> None:
    orig = Observation("orig", "alice", T0 + 1, hashtags=("news",), vector=_vec(1), text="a storm")
    tracker.observe([orig])
    reposts = [
        Observation(f"rp{i}", f"fan{i % 3}", T0 + 2 + i, hashtags=("news",), duplicate_of="orig")
        for i in range(9)
    ]
    tracker.observe(reposts)
    w = int(T0 // W)
    counts = tracker.store.counts([w])[0]
    assert counts["h:news"] == 4  # alice + 3 distinct reposters
    cid = tracker.store.cluster_of(["orig"])["orig"]
    assert counts[f"c:{cid}"] == 4
    assert tracker.store.members(f"c:{cid}", [w], 100) == ["orig"]


def test_late_posts_beyond_the_allowance_are_dropped(tracker: StoreTracker) -> None:
    tracker.observe([Observation("new", "a", T0 + 1000, hashtags=("x",))])
    tracker.observe(
        [
            Observation("late-ok", "b", T0 + 1000 - 100, hashtags=("x",)),
            Observation("too-late", "c", T0 + 1000 - 121, hashtags=("x",)),
        ]
    )
    assert tracker.dropped_late == 1
    w_ok = int((T0 + 900) // W)
    assert tracker.store.counts([w_ok])[0].get("h:x") == 1


def test_stop_tags_never_trend(tracker: StoreTracker) -> None:
    _background(tracker, 30)
    _burst(tracker, 30, "fyp", 40)
    assert tracker.current(now=T0 + 30 * W + 59) == []


def test_meaning_burst_flags_a_labelled_cluster(tracker: StoreTracker) -> None:
    rng = np.random.default_rng(0)
    centers = [_vec(s, 32) for s in range(6)]
    for w in range(30):
        t = T0 + w * W
        batch = []
        for i in range(6):
            v = centers[i] + rng.normal(scale=0.05, size=32).astype(np.float32)
            batch.append(
                Observation(f"m{w}-{i}", f"u{w}-{i}", t + i, vector=v, text=f"topic{i} words")
            )
        tracker.observe(batch)
    t = T0 + 30 * W
    flood = [
        Observation(
            f"flood{i}",
            f"f{i}",
            t + i,
            vector=centers[2] + rng.normal(scale=0.05, size=32),
            text=f"volcano erupting view {i}",
        )
        for i in range(25)
    ]
    tracker.observe(flood)
    found = tracker.current(kind="cluster", now=t + 59)
    assert len(found) == 1
    assert "volcano" in found[0].label or "erupting" in found[0].label
    members = tracker.member_ids(found[0].id)
    assert {f"flood{i}" for i in range(25)} <= set(members)
    assert tracker.current(kind="hashtag", now=t + 59) == []


def test_a_new_item_has_a_finite_score() -> None:
    b = burst(3, [], BurstParams())
    assert np.isfinite(b.score) and not b.bursting
    rate, spread = baseline([0] * 50, BurstParams())
    assert 0 < rate < 0.2 and spread >= rate


def test_a_burst_filling_half_the_history_does_not_hide_the_next_one() -> None:
    # 30 of the last 60 windows were an earlier burst (70 authors on a tag of ~10): the
    # median of the history is the burst's level, a low quantile is not
    history = [10, 9, 11, 10] * 7 + [70] * 30 + [10, 11]
    params = BurstParams()
    assert burst(60, [*history, 60], params).bursting  # the second window of a new burst
    assert not burst(60, [*history, 60], replace(params, clip_quantile=0.5)).bursting
    assert not burst(12, [*history, 11], params).bursting  # the usual level: no trend


def test_bad_queries_are_refused(tracker: StoreTracker) -> None:
    with pytest.raises(InvalidTrendQueryError):
        tracker.current(kind="nope")  # type: ignore[arg-type]
    with pytest.raises(InvalidTrendQueryError):
        tracker.current(limit=0)
    assert tracker.current() == []
    assert parse_trend_id("x:1") is None and parse_trend_id("c:abc") is None
    assert parse_trend_id("c:12") == ("cluster", "c:12")


def test_open_tracker_without_redis_is_in_memory() -> None:
    s = Settings()
    tracker = open_tracker(s)
    assert isinstance(tracker.store, MemoryStore)
    assert tracker.params.window_s == s.trends.window_s
