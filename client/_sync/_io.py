"""The sync client's clock: the only code the two clients do not share or generate."""

from __future__ import annotations

import time

monotonic = time.monotonic


def sleep(seconds: float) -> None:
    time.sleep(seconds)
