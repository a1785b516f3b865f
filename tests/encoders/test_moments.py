"""Video moments: time windows over sampled frames, and their vectors."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

from crossfeed.encoders.base import Embedder
from crossfeed.encoders.moments import MAX_MOMENTS, segment_moments
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.exceptions import InvalidInputError

if TYPE_CHECKING:
    from crossfeed.encoders.model import SharedSpaceEmbedder


def test_frames_fall_into_consecutive_windows() -> None:
    moments = segment_moments([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 4.0)
    assert [(m.index, m.start_s, m.end_s, m.frames) for m in moments] == [
        (0, 0.0, 4.0, (0, 1, 2, 3)),
        (1, 4.0, 8.0, (4, 5, 6, 7)),
        (2, 8.0, 10.0, (8, 9)),  # the last sample stands for one more second
    ]


def test_short_video_and_switched_off_give_no_moments() -> None:
    assert segment_moments([0.0, 1.0, 2.0, 3.0], 4.0) == []  # one window: the pooled vector
    assert segment_moments([0, 5, 10], 0.0) == []
    assert segment_moments([0.0], 4.0) == []


def test_long_video_gets_wider_windows_never_more_than_the_cap() -> None:
    times = [i * 7.5 for i in range(16)]  # two minutes sampled sparsely
    moments = segment_moments(times, 4.0)
    assert len(moments) == MAX_MOMENTS
    assert moments[-1].end_s == pytest.approx(120.0)
    assert sorted(i for m in moments for i in m.frames) == list(range(16))


def test_empty_windows_are_skipped_and_bad_input_refused() -> None:
    moments = segment_moments([0.0, 0.5, 9.0], 4.0, frame_span_s=0.5)
    assert [(m.start_s, m.end_s, m.frames) for m in moments] == [
        (0.0, 4.0, (0, 1)),
        (8.0, 9.5, (2,)),
    ]
    with pytest.raises(InvalidInputError):
        segment_moments([2.0, 1.0], 1.0)
    with pytest.raises(InvalidInputError):
        segment_moments([0.0, 1.0], 1.0, frame_span_s=0)


def _frames(colors: list[tuple[int, int, int]]) -> list[Image.Image]:
    return [Image.new("RGB", (8, 8), c) for c in colors]


def test_moment_vectors_pool_their_own_frames() -> None:
    embedder: Embedder = HashingEmbedder(dim=16)
    frames = _frames([(200, 0, 0)] * 3 + [(0, 0, 200)] * 3)
    whole, parts = embedder.embed_video_moments(frames, [(0, 1, 2), (3, 4, 5)])
    np.testing.assert_allclose(whole, embedder.embed_videos([frames])[0], atol=1e-6)
    np.testing.assert_allclose(parts[0], embedder.embed_images(frames[:1])[0], atol=1e-6)
    np.testing.assert_allclose(parts[1], embedder.embed_images(frames[3:4])[0], atol=1e-6)
    assert float(parts[0] @ parts[1]) < 0.99  # two different moments
    whole_only, none = embedder.embed_video_moments(frames, [])
    assert none.shape == (0, 16) or len(none) == 0
    np.testing.assert_allclose(whole_only, whole, atol=1e-6)


def test_shared_space_moments_match_the_generic_recipe(embedder: SharedSpaceEmbedder) -> None:
    """The one-tower-pass override gives what embedding each clip separately gives."""
    frames = _frames([(200, 30, 30), (190, 40, 30), (30, 30, 200), (40, 30, 210)])
    groups = [(0, 1), (2, 3)]
    whole, parts = embedder.embed_video_moments(frames, groups)
    ref_whole, ref_parts = Embedder.embed_video_moments(embedder, frames, groups)
    np.testing.assert_allclose(whole, ref_whole, atol=1e-5)
    np.testing.assert_allclose(parts, ref_parts, atol=1e-5)
