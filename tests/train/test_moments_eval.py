"""``crossfeed eval moments`` on tiny synthetic videos (fake spaces, no clipart, no towers)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crossfeed.core.settings import EncoderSettings
from crossfeed.encoders.base import l2_normalize
from crossfeed.train import moments_report
from crossfeed.train.cli import add_commands
from crossfeed.train.moments_data import (
    CachedFrameFeatures,
    SampledVideo,
    Segment,
    VideoSpec,
    compose_specs,
    production_decoder,
    sample_videos,
)
from crossfeed.train.moments_eval import SpaceSide, compare_windows
from crossfeed.train.moments_metrics import choose_window, evaluate, interval_iou

COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (230, 230, 30)]
N_CATS = len(COLOURS)


def perfect(x: np.ndarray) -> np.ndarray:
    """Features are category indicators already: the identity space."""
    return l2_normalize(np.asarray(x, np.float64))


def constant(x: np.ndarray) -> np.ndarray:
    """A space that maps everything to one vector: it cannot tell moments apart."""
    return l2_normalize(np.ones((len(x), N_CATS)))


def synthetic(lengths: Sequence[float], cats: Sequence[int] = (0, 1, 2)) -> SampledVideo:
    """A video sampled at 1 fps whose frame features are its segments' category indicators."""
    segs, start = [], 0.0
    for cat, length in zip(cats, lengths, strict=True):
        segs.append(Segment(cat, start, start + length))
        start += length
    times = np.arange(0.0, start, 1.0)
    feats = np.zeros((len(times), N_CATS), np.float32)
    for i, t in enumerate(times):
        feats[i, next(s.category for s in segs if s.start_s <= t < s.end_s)] = 1.0
    return SampledVideo(VideoSpec((0, 1, 2), tuple(segs)), times, feats)


def test_interval_iou() -> None:
    assert interval_iou((0, 4), (0, 4)) == 1.0
    assert interval_iou((0, 4), (2, 6)) == pytest.approx(2 / 6)
    assert interval_iou((0, 8), (2, 4)) == pytest.approx(2 / 8)
    assert interval_iou((0, 2), (3, 5)) == 0.0
    assert interval_iou((1, 1), (1, 1)) == 0.0


def test_perfect_space_localizes_every_segment_and_baselines_are_exact() -> None:
    videos = [synthetic([4, 4, 4]), synthetic([4, 4, 4], (3, 1, 0))]
    m = evaluate(videos, 4.0, perfect, np.eye(N_CATS))
    assert (m["r1@0.5"], m["iou"], m["hit"]) == (1.0, 1.0, 1.0)
    # Random moment among 3 equal windows: right one with p = 1/3, the others IoU 0.
    assert m["random_r1@0.5"] == pytest.approx(1 / 3)
    assert m["random_iou"] == pytest.approx(1 / 3)
    # The whole 12 s video against a 4 s segment; its midpoint (6 s) is in the middle one.
    assert m["whole_iou"] == pytest.approx(1 / 3)
    assert m["whole_r1@0.5"] == 0.0
    assert m["whole_hit"] == pytest.approx(1 / 3)
    assert m["moments_per_video"] == 3.0
    assert m["moment_map"] == pytest.approx(1.0)
    assert m["video_map"] == pytest.approx(1.0)
    assert m["video_relevant_share"] == pytest.approx(3 / 4)  # 3 of 4 categories per video


def test_constant_space_scores_as_the_random_baseline() -> None:
    videos = [synthetic([3, 5, 2]), synthetic([2, 6, 4], (3, 2, 1)), synthetic([5, 2, 3])]
    for window in (2.0, 3.0, 4.0):
        m = evaluate(videos, window, constant, np.eye(N_CATS))
        for key in ("r1@0.5", "iou", "hit"):
            assert m[key] == pytest.approx(m[f"random_{key}"])
        assert m["iou"] < 1.0


def test_video_in_one_window_answers_with_the_whole_video() -> None:
    m = evaluate([synthetic([2, 2, 2])], 8.0, perfect, np.eye(N_CATS))
    assert m["videos_without_moments"] == 1.0
    assert m["iou"] == pytest.approx(m["whole_iou"]) == pytest.approx(1 / 3)


def test_window_is_chosen_on_validation_only() -> None:
    # Validation: 3 s segments (a 3 s window cuts them exactly); test: 8 s segments.
    validation = SpaceSide(perfect, np.eye(N_CATS), {0: [synthetic([3, 3, 3])] * 2})
    test = SpaceSide(perfect, np.eye(N_CATS), {0: [synthetic([8, 8, 8])] * 2})
    result = compare_windows(validation, test, (3.0, 8.0), default_s=8.0)
    assert result["chosen_window_s"] == 3.0  # although the default and the test prefer 8
    assert result["test_sweep_r1"]["8"]["mean"] > result["test_sweep_r1"]["3"]["mean"]
    assert set(result["test"]) == {"3", "8"}
    assert result["test"]["3"]["summary"]["r1@0.5"]["mean"] < 1.0
    assert result["validation_sweep"]["3"]["r1@0.5"]["mean"] == 1.0
    # Ties go to the window nearest the default.
    tie = {w: {"r1@0.5": {"mean": 0.5}} for w in (2.0, 4.0, 6.0)}
    assert choose_window(tie, 5.0) == 4.0


def test_composed_videos_have_distinct_categories_and_quantised_durations() -> None:
    labels = np.array([0, 0, 1, 2, 3, 3, 1])
    specs = compose_specs(labels, 20, np.random.default_rng(0), durations_s=(2, 6), fps=4)
    again = compose_specs(labels, 20, np.random.default_rng(0), durations_s=(2, 6), fps=4)
    assert specs == again
    for spec in specs:
        cats = [s.category for s in spec.segments]
        assert len(set(cats)) == 3
        assert cats == [int(labels[r]) for r in spec.images]
        assert spec.segments[0].start_s == 0.0
        for a, b in zip(spec.segments, spec.segments[1:], strict=False):
            assert a.end_s == pytest.approx(b.start_s)
        for s in spec.segments:
            length = s.end_s - s.start_s
            assert 2.0 <= length <= 6.0
            assert length * 4 == pytest.approx(round(length * 4))


def test_real_mp4_round_trip_localizes_with_a_perfect_space() -> None:
    """Encode with PyAV, decode at the production sampling, featurise with a cache."""
    pictures = [Image.new("RGB", (32, 32), c) for c in COLOURS]
    labels = np.arange(N_CATS)
    specs = compose_specs(labels, 3, np.random.default_rng(1), durations_s=(4, 4), fps=4)

    def colour_features(frames: Sequence[Image.Image]) -> np.ndarray:
        means = np.stack([np.asarray(f.convert("RGB"), np.float32).mean((0, 1)) for f in frames])
        return (np.linalg.norm(means[:, None] - np.array(COLOURS)[None], axis=2) < 40).astype(
            np.float32
        )  # the indicator of the nearest category colour

    features = CachedFrameFeatures(colour_features, "colour", None)
    videos = sample_videos(
        specs, lambda row: pictures[row], production_decoder(EncoderSettings()), features
    )
    assert features.cache.hits > features.cache.misses  # a still picture decodes alike
    for video in videos:
        assert video.timestamps.tolist() == [float(t) for t in range(12)]
        assert video.features.sum(1).tolist() == [1.0] * 12
    m = evaluate(videos, 4.0, perfect, np.eye(N_CATS))
    assert (m["r1@0.5"], m["hit"]) == (1.0, 1.0)
    assert m["whole_r1@0.5"] == 0.0


def test_command_is_registered() -> None:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["eval", "moments", "--seeds", "0,1", "--videos", "5", "--windows", "2,4", "--json"]
    )
    assert args.seeds == (0, 1) and args.windows == (2.0, 4.0) and args.videos == 5
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "moments", "--windows", "two"])


def test_tables_and_filmstrip(tmp_path: Path) -> None:
    side = SpaceSide(
        perfect, np.eye(N_CATS), {0: [synthetic([3, 5, 4])], 1: [synthetic([4, 4, 4])]}
    )
    result = compare_windows(side, side, (2.0, 4.0), default_s=4.0)
    report = {"spaces": {"perfect": result}}
    tables = moments_report.tables(report)
    assert set(tables) == {"localization", "retrieval", "sweep"}
    assert (
        "| perfect space, window 4 s (chosen on validation, default) | 1.000 ± 0.000"
        in (tables["localization"])
    )
    assert "| whole video |" in tables["localization"]
    assert "**chosen**" in tables["sweep"]
    pictures = [Image.new("RGB", (16, 16), c) for c in COLOURS]
    path = moments_report.filmstrip(
        tmp_path / "f.png",
        synthetic([3, 5, 4]),
        4.0,
        perfect,
        np.eye(N_CATS),
        ["red", "green", "blue", "yellow"],
        picture=lambda row: pictures[row],
        title="t",
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
