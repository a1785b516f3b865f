"""``crossfeed eval trends`` on a tiny made-up corpus: the stream it builds, the replay
through the tracker, and the scoring of flags (no encoder, no corpus build)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from crossfeed.train.trends_data import EvalCorpus, Item, Stream, StreamParams, build_stream
from crossfeed.train.trends_eval import TARGETS, replay, score, targets_met
from crossfeed.trends.tracker import TrackerParams


def _corpus(dim: int = 16) -> EvalCorpus:
    rng = np.random.default_rng(0)
    cats = ["animals", "food", "tools"]
    centers = {c: rng.normal(size=dim) for c in cats}
    items, rows = [], []
    for i in range(300):
        cat = cats[i % 3]
        rows.append(centers[cat] + rng.normal(scale=0.3, size=dim))
        items.append(Item(f"a {cat} picture {i}", (cat, f"misc{i % 7}"), i, cat, None))
    events, event_category = [], []
    for cat in cats:
        center = rng.normal(size=dim)
        pool = []
        for _ in range(20):
            rows.append(center + rng.normal(scale=0.1, size=dim))
            pool.append(Item(f"the {cat} event, in other words", (cat,), len(rows) - 1, cat, None))
        events.append(pool)
        event_category.append(cat)
    vectors = np.asarray(rows, dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return EvalCorpus(items, events, event_category, vectors, "test")


PARAMS = StreamParams(
    rate_per_min=60.0, warmup_h=1.0, background_h=2.0, slots=3, min_tag_rate=4.0, seed=1
)


@pytest.fixture(scope="module")
def stream() -> Stream:
    return build_stream(_corpus(), PARAMS)


def test_the_stream_has_every_kind_of_burst_in_event_time_order(stream: Stream) -> None:
    kinds = Counter(b.kind for b in stream.bursts)
    assert kinds == {"hashtag": 3, "meaning": 3, "spam": 3}
    times = [lp.obs.created_at for lp in stream.posts]
    assert times == sorted(times)
    bg_from, bg_to = stream.background
    assert all(b.onset >= bg_to for b in stream.bursts)
    assert bg_to - bg_from == pytest.approx(2 * 3600)
    for b in stream.bursts:
        posts = [lp.obs for lp in stream.posts if lp.burst == b.index]
        assert len(posts) == b.posts > 0
        if b.kind == "spam":
            assert {o.author for o in posts} == {f"spammer{b.index}"} and len(posts) >= 100
        else:
            assert len({o.author for o in posts}) == len(posts)  # new authors
            assert 3.0 <= b.multiplier <= 10.0
        if b.kind == "hashtag":
            assert all(b.target in o.hashtags for o in posts)


def test_same_seed_same_stream() -> None:
    a = build_stream(_corpus(), PARAMS)
    b = build_stream(_corpus(), PARAMS)
    assert [lp.obs.post_id for lp in a.posts] == [lp.obs.post_id for lp in b.posts]
    assert a.bursts == b.bursts


def test_replay_finds_bursts_and_never_the_spam(stream: Stream) -> None:
    rep = replay(stream, TrackerParams())
    result = score(rep.flags, stream, 60.0)
    for key in TARGETS:
        assert key in result
    assert result["spam_flagged"] == 0
    assert result["recall_hashtag"] == 1.0
    assert result["recall_meaning"] >= 2 / 3
    base = score(rep.baseline, stream, 60.0)
    assert base["spam_flagged"] > 0  # counting posts, the baseline falls for spam


def test_scoring_counts_false_trends_and_delays(stream: Stream) -> None:
    bg_from = int(stream.background[0] // 60)
    hashtag = next(b for b in stream.bursts if b.kind == "hashtag")
    ow = int(hashtag.onset // 60)
    flags = {
        bg_from + 5: {"h:noise": ["x"]},
        bg_from + 6: {"h:noise": ["x"]},  # the same run: one false trend
        bg_from + 50: {"c:9": ["y"]},
        ow + 2: {f"h:{hashtag.target}": ["z"]},
    }
    result = score(flags, stream, 60.0)
    assert result["false_trends"] == 2
    assert result["false_per_24h"] == pytest.approx(2 / 2 * 24)
    assert result["recall_hashtag"] == pytest.approx(1 / 3)
    assert result["delay_p50_windows"] == 2
    assert result["recall_meaning"] == 0.0
    met = targets_met(result)
    assert met["spam_flagged"] and not met["recall"] and not met["false_per_24h"]


def test_meaning_bursts_share_no_spelling_of_the_subject_tag() -> None:
    from crossfeed.train.trends_data import without_subject_tags

    tags = ("police man", "policeman", "polcieman", "poliecman", "people", "person", "fyp")
    assert without_subject_tags(tags, ("police", "man")) == ("people", "person", "fyp")
    # short subjects: exact run-together form only (no typos of <5 letters are made)
    assert without_subject_tags(("cat", "car", "cats"), ("cat",)) == ("car", "cats")
    assert without_subject_tags(("animals",), ()) == ("animals",)
