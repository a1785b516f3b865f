"""The async client's clock: the only code the two clients do not share or generate."""

from __future__ import annotations

import time

import anyio

monotonic = time.monotonic


async def sleep(seconds: float) -> None:
    await anyio.sleep(seconds)
