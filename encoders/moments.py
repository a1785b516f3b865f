"""Video moments: the parts of a video a query can be aligned with.

A video's sampled frames (with their timestamps, from
:func:`crossfeed.encoders.media.decode_video`) are grouped into consecutive
time windows; each window becomes one *moment* with its own vector in the
shared space, beside the whole video's pooled vector. A text query then finds
the moment that matches it, not just the video (the survey's alignment
challenge), and a hit can say where to seek.

Windows rather than learned shot boundaries: there is no labelled moment data
to tune a boundary detector on, and a window of a few seconds is close to the
usual shot length of short social videos (``crossfeed eval moments`` measures
the window on synthetic videos; see ``EncoderSettings.video_moment_s``). A
video that fits in one window gets no moments (its one moment would repeat the
pooled vector); a long video gets wider windows so that it never has more than
:data:`MAX_MOMENTS`.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from crossfeed.exceptions import InvalidInputError

# Per video. Bounds the rows one post can add to the index (and to a search's
# oversampling) whatever the video's length.
MAX_MOMENTS = 8


@dataclass(frozen=True)
class Moment:
    """One time window of a video and the sampled frames that fall in it."""

    index: int  # 0-based, in time order
    start_s: float
    end_s: float
    frames: tuple[int, ...]  # indices into the video's sampled frames


def segment_moments(
    timestamps: Sequence[float], window_s: float, *, frame_span_s: float | None = None
) -> list[Moment]:
    """Group sampled frames into consecutive windows of at least ``window_s`` seconds.

    ``timestamps``: each sampled frame's presentation time in seconds (ascending;
    the decoder's order). ``frame_span_s``: how long one sample stands for (the
    sampling interval; default: the median gap between samples), so the last
    moment ends after its last frame rather than on it. Returns [] when the video
    fits in one window or ``window_s`` <= 0 (moments off). Windows with no sampled
    frame are skipped.
    """
    if frame_span_s is not None and frame_span_s <= 0:
        raise InvalidInputError("frame_span_s must be positive")
    if window_s <= 0 or len(timestamps) < 2:
        return []
    times = [max(0.0, float(t)) for t in timestamps]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    if any(g < 0 for g in gaps):
        raise InvalidInputError("frame timestamps must be ascending")
    if frame_span_s is None:
        frame_span_s = statistics.median(gaps) or 1e-3  # all frames at one instant
    duration = times[-1] + frame_span_s
    window = max(window_s, duration / MAX_MOMENTS)
    # A hair of tolerance: a frame at exactly k * window belongs to window k.
    buckets: dict[int, list[int]] = {}
    for i, t in enumerate(times):
        buckets.setdefault(math.floor(t / window + 1e-9), []).append(i)
    if len(buckets) < 2:
        return []
    moments: list[Moment] = []
    for n, k in enumerate(sorted(buckets)):
        start = k * window
        end = min((k + 1) * window, duration)
        moments.append(Moment(n, round(start, 3), round(end, 3), tuple(buckets[k])))
    return moments
