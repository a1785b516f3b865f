"""Metrics of ``crossfeed eval moments``: does a text query find the right part of a video?

Localization (per query = one category of one video, asked with its topic
word): the answer is the video's moment most similar to the query.

* ``r1@0.5``: the answer's temporal IoU with the true segment is >= 0.5;
* ``iou``: that IoU;
* ``hit``: the answer's midpoint lies inside the true segment.

Ties (a flat score over several moments) count as a uniformly random choice
among the tied moments, so a space that cannot tell moments apart scores
exactly the random-moment baseline. Baselines of the same videos: a random
moment (the exact expected value over the video's moments) and the whole
video as the answer. A video that fits in one window has no moments (as in
the embed stage); its only answer is the whole video.

Retrieval, a different task reported beside it: for each topic word, AP over
a gallery of every moment of every video (relevant: the moment's
majority-overlap segment has the category) and AP over the pooled whole
videos (relevant: the video contains the category). The moment gallery is
larger and its relevant share is lower, so the two APs are not comparable as
"better or worse"; each is shown with its relevant share (about the AP of a
random ranking).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from crossfeed.encoders.moments import segment_moments
from crossfeed.train.metrics import average_precisions
from crossfeed.train.moments_data import SampledVideo

Embed = Callable[[np.ndarray], np.ndarray]
R1_IOU = 0.5
_TIE = 1e-6  # similarities this close to the best are a tie

LOCALIZATION_KEYS = ("r1@0.5", "iou", "hit")


def interval_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Temporal IoU of two ``(start, end)`` intervals (0 when they do not overlap)."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def answer_scores(span: tuple[float, float], truth: tuple[float, float]) -> np.ndarray:
    """``[r1@0.5, iou, hit]`` of answering ``truth`` with ``span``."""
    iou = interval_iou(span, truth)
    mid = (span[0] + span[1]) / 2
    return np.array([iou >= R1_IOU - 1e-9, iou, truth[0] <= mid < truth[1]], dtype=np.float64)


def expected_scores(
    spans: Sequence[tuple[float, float]], truth: tuple[float, float], chosen: np.ndarray
) -> np.ndarray:
    """Mean :func:`answer_scores` over the moments in ``chosen`` (a uniform pick among them)."""
    return np.mean([answer_scores(spans[i], truth) for i in chosen], axis=0)


def top_moments(sims: np.ndarray) -> np.ndarray:
    """Indices of the moments tied for the highest similarity."""
    sims = np.asarray(sims, dtype=np.float64)
    return np.flatnonzero(sims >= sims.max() - _TIE)


@dataclass
class VideoMoments:
    """One video cut into moments at one window, with each moment's vector."""

    video: SampledVideo
    spans: list[tuple[float, float]]
    vectors: np.ndarray  # (n_moments, dim)
    pooled: np.ndarray  # (dim,)
    has_moments: bool  # False: the video fit in one window (the whole video is the answer)


def cut(video: SampledVideo, window_s: float, embed: Embed) -> VideoMoments:
    """Moments of ``video`` as the embed stage makes them, embedded with ``embed``.

    Moment (and whole-video) vectors are the space's image head on the mean
    tower features of their frames, as the production embedder pools them.
    """
    moments = segment_moments(video.timestamps.tolist(), window_s)
    feats = video.features
    groups = [list(m.frames) for m in moments]
    pooled_feats = np.stack([feats.mean(0)] + [feats[g].mean(0) for g in groups])
    vectors = np.asarray(embed(pooled_feats), dtype=np.float64)
    whole = (0.0, video.duration_s)
    if not moments:
        return VideoMoments(video, [whole], vectors[:1], vectors[0], False)
    spans = [(m.start_s, m.end_s) for m in moments]
    return VideoMoments(video, spans, vectors[1:], vectors[0], True)


def majority_category(video: SampledVideo, span: tuple[float, float]) -> int:
    """The category of the segment that overlaps ``span`` most (earliest on a tie)."""
    overlaps = [max(0.0, min(span[1], s.end_s) - max(span[0], s.start_s)) for s in video.segments]
    return video.segments[int(np.argmax(overlaps))].category


def evaluate(
    videos: Sequence[SampledVideo], window_s: float, embed: Embed, queries: np.ndarray
) -> dict[str, float]:
    """Localization, its baselines and the two retrieval APs of ``videos`` at ``window_s``.

    ``queries``: ``(n_categories, dim)`` unit vectors of the topic words, row =
    category id. Returns a flat dict of numbers (one run).
    """
    queries = np.asarray(queries, dtype=np.float64)
    cut_videos = [cut(v, window_s, embed) for v in videos]
    model, rand, whole = [], [], []
    for vm in cut_videos:
        full = (0.0, vm.video.duration_s)
        for seg in vm.video.segments:
            truth = (seg.start_s, seg.end_s)
            sims = vm.vectors @ queries[seg.category]
            model.append(expected_scores(vm.spans, truth, top_moments(sims)))
            rand.append(expected_scores(vm.spans, truth, np.arange(len(vm.spans))))
            whole.append(answer_scores(full, truth))
    out: dict[str, float] = {"window_s": float(window_s), "queries": float(len(model))}
    for name, rows in (("", model), ("random_", rand), ("whole_", whole)):
        means = np.mean(rows, axis=0)
        out |= {f"{name}{k}": float(v) for k, v in zip(LOCALIZATION_KEYS, means, strict=True)}
    out["moments_per_video"] = float(np.mean([len(vm.spans) for vm in cut_videos]))
    out["videos_without_moments"] = float(np.mean([not vm.has_moments for vm in cut_videos]))
    out |= retrieval(cut_videos, queries)
    return out


def retrieval(cut_videos: Sequence[VideoMoments], queries: np.ndarray) -> dict[str, float]:
    """Topic-word mAP over all moments vs over whole videos (different galleries)."""
    n_cats = len(queries)
    moment_vecs = np.concatenate([vm.vectors for vm in cut_videos])
    moment_labels = np.array(
        [majority_category(vm.video, span) for vm in cut_videos for span in vm.spans]
    )
    video_vecs = np.stack([vm.pooled for vm in cut_videos])
    video_labels = np.zeros((len(cut_videos), n_cats), dtype=np.int8)
    for i, vm in enumerate(cut_videos):
        video_labels[i, [s.category for s in vm.video.segments]] = 1
    moment_ap = average_precisions(queries @ moment_vecs.T, np.arange(n_cats), moment_labels)
    video_ap = average_precisions(queries @ video_vecs.T, np.eye(n_cats), video_labels)
    asked = ~np.isnan(moment_ap)
    moment_share = np.array([(moment_labels == c).mean() for c in range(n_cats)])
    video_share = video_labels.mean(axis=0)
    return {
        "moment_map": _nanmean(moment_ap),
        "moment_relevant_share": float(moment_share[asked].mean()),
        "video_map": _nanmean(video_ap),
        "video_relevant_share": float(video_share[~np.isnan(video_ap)].mean()),
        "moment_gallery": float(len(moment_labels)),
        "topic_queries": float(asked.sum()),
    }


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def choose_window(validation: dict[float, dict[str, dict[str, float]]], default: float) -> float:
    """The window with the best mean validation ``r1@0.5`` (ties: nearest the default, then
    the smaller). ``validation``: window -> aggregated metrics (``{key: {"mean": ...}}``)."""
    if not validation:
        raise ValueError("no validation results to choose a window from")
    return min(
        validation,
        key=lambda w: (-round(validation[w]["r1@0.5"]["mean"], 9), abs(w - default), w),
    )
