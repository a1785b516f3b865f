"""Burst scores: the current window's distinct authors against the item's own baseline.

The baseline is a Poisson-gamma estimate over the item's last ``history`` windows
(each clipped near a low quantile, so past bursts do not count as normal; zeros included,
from the first window the tracker saw): a new item starts from the
prior ``prior_rate`` with the weight of ``prior_windows`` windows, so it has a finite
score, and an item seen for an hour has its own rate. The spread is the larger of the
Poisson spread and the item's own (shrunk) variance, so bursty tags need more to flag.

``z(s) = (sum of the last s windows - s * rate) / sqrt(s * spread + 1)`` for spans
``s = 1 .. span`` (the baseline from the windows before the span); the score is the
largest. A burst over two windows is told from noise far sooner than one window can
(Poisson noise grows as the square root), and a lone noisy spike scores low over two.
An item is bursting when a span of 2+ windows scores ``>= z`` (or the window alone
``>= z_single``), the current window has ``x >= min_authors`` and ``x >= ratio * rate``.
The ``+ 1`` keeps one or two authors on a quiet item from scoring high.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

CLIP_QUANTILE = 0.3


@dataclass(frozen=True)
class BurstParams:
    z: float = 6.0
    min_authors: int = 5
    ratio: float = 2.5
    prior_rate: float = 0.5
    prior_windows: float = 10.0
    span: int = 2
    # one window alone must clear this (a lone spike is usually noise; a burst persists)
    z_single: float = 8.0
    # history windows are clipped to ``q + 4 sqrt(q + 1)``, q this quantile of them: below
    # the median, so a burst filling half the history (30 min of 60) cannot raise it
    clip_quantile: float = CLIP_QUANTILE


@dataclass(frozen=True)
class Burst:
    score: float
    rate: float  # distinct authors in the scored window
    baseline: float  # expected distinct authors per window
    bursting: bool


def _clipped(history: Sequence[int], quantile: float = CLIP_QUANTILE) -> list[float]:
    """The history with earlier bursts cut down to ``q + 4 sqrt(q + 1)`` (``q`` the
    ``quantile`` of the history), so a burst in the last hour neither inflates the
    baseline nor hides the next one, even one that lasted half of the history."""
    if not history:
        return []
    ordered = sorted(history)
    q = float(ordered[min(len(ordered) - 1, int(len(ordered) * quantile))])
    cap = q + 4.0 * math.sqrt(q + 1.0)
    return [min(float(x), cap) for x in history]


def baseline(history: Sequence[int], params: BurstParams) -> tuple[float, float]:
    """(expected rate, spread) of an item from its past windows' counts (oldest first)."""
    clipped = _clipped(history, params.clip_quantile)
    n = len(clipped)
    a = params.prior_windows
    total = float(sum(clipped))
    rate = (total + a * params.prior_rate) / (n + a)
    if n:
        mean = total / n
        sq = sum((x - mean) ** 2 for x in clipped)
    else:
        sq = 0.0
    var = (sq + a * params.prior_rate) / (n + a)
    return rate, max(rate, var)


def burst(current: int, history: Sequence[int], params: BurstParams) -> Burst:
    """The burst of the window counted ``current`` after windows counted ``history``."""
    rate, spread = baseline(history, params)
    single = (current - rate) / math.sqrt(spread + 1.0)
    series = [*history, current]
    spans = -math.inf
    for s in range(2, params.span + 1):
        if len(series) <= s:
            break
        r, v = baseline(series[:-s], params)
        spans = max(spans, (sum(series[-s:]) - s * r) / math.sqrt(s * v + 1.0))
    score = max(single, spans)
    bursting = (
        (spans >= params.z or single >= max(params.z, params.z_single))
        and current >= params.min_authors
        and current >= params.ratio * rate
    )
    return Burst(score=score, rate=float(current), baseline=rate, bursting=bursting)
