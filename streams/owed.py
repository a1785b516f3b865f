"""What the index stage owes Redis while Redis is away, paid by ``IndexStage.settle``.

* the **epoch bump** (with the newest write fence of the batches indexed meanwhile): until
  it is paid, results cached before the outage could miss those rows, so the API skips
  the cache while it sees Redis away, and the first bump afterwards retires them;
* **erasure checks** of the posts indexed meanwhile (the ledger is in Redis), at most
  :data:`MAX_OWED_ERASURE_CHECKS` post ids;
* **standing-query matches**, held up to a bound; more are dropped and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from crossfeed.live.base import Match
from crossfeed.streams.metrics import WorkerMetrics

log = logging.getLogger(__name__)

MAX_OWED_ERASURE_CHECKS = 100_000


@dataclass
class OwedToRedis:
    metrics: WorkerMetrics
    match_buffer: int = 10_000
    bump: bool = False
    fence: int | None = None
    checks: set[str] = field(default_factory=set)
    matches: list[Match] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {
            "epoch_bump": int(self.bump),
            "erasure_checks": len(self.checks),
            "matches": len(self.matches),
        }

    def __bool__(self) -> bool:
        return self.bump or bool(self.checks) or bool(self.matches)

    def owe_bump(self, fence: int | None) -> None:
        if not self.bump:
            log.warning("index epoch bump owed until Redis is back (searches skip the cache)")
        self.bump = True
        self.fence = max(self.fence or 0, fence or 0) or None
        self.metrics.epoch_bump_owed.set(1)

    def bump_paid(self, epoch: int) -> None:
        self.bump, self.fence = False, None
        self.metrics.epoch_bump_owed.set(0)
        log.warning("paid the epoch bump owed since the outage: epoch %d", epoch)

    def owe_checks(self, ids: Iterable[str]) -> None:
        new = sorted(set(ids) - self.checks)
        room = max(0, MAX_OWED_ERASURE_CHECKS - len(self.checks))
        if room < len(new):
            log.warning("too many posts owed an erasure check: %d not remembered", len(new) - room)
        self.checks.update(new[:room])
        self.metrics.erasure_checks_owed.set(len(self.checks))

    def checks_paid(self, ids: set[str]) -> None:
        self.checks -= ids
        self.metrics.erasure_checks_owed.set(len(self.checks))

    def hold(self, found: list[Match]) -> None:
        room = max(0, self.match_buffer - len(self.matches))
        kept = found[:room]
        self.matches.extend(kept)
        self.metrics.matches_buffered.set(len(self.matches))
        if len(kept) < len(found):
            self.metrics.matches_dropped.inc(len(found) - len(kept))
            log.warning(
                "match buffer full (%d): %d standing-query matches dropped",
                self.match_buffer,
                len(found) - len(kept),
            )

    def matches_paid(self, count: int, new: int) -> None:
        del self.matches[:count]
        self.metrics.matches_buffered.set(len(self.matches))
        log.warning("wrote %d standing-query matches held during the outage", new)
