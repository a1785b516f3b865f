"""The circuit breaker around optional engines (core/breaker.py)."""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry, Gauge

from crossfeed.core.breaker import Outage
from crossfeed.exceptions import CircuitOpenError, InvalidInputError


class Engine:
    def __init__(self) -> None:
        self.up = False
        self.calls = 0

    def get(self) -> str:
        self.calls += 1
        if not self.up:
            raise ConnectionError("refused")
        return "value"

    async def aget(self) -> str:
        return self.get()


def _gauge() -> Gauge:
    return Gauge("g", "g", registry=CollectorRegistry())


def test_opens_after_failures_then_fails_fast_and_recovers() -> None:
    engine, gauge = Engine(), _gauge()
    outage = Outage("redis", failures=2, reset_s=0.2, gauge=gauge)
    with pytest.raises(ConnectionError):
        outage.call(engine.get)
    assert not outage.down and gauge._value.get() == 0
    with pytest.raises(ConnectionError):
        outage.call(engine.get)
    assert outage.down and gauge._value.get() == 1 and outage.outages == 1
    for _ in range(100):  # open: refused at once, the engine is not asked
        with pytest.raises(CircuitOpenError):
            outage.call(engine.get)
    assert engine.calls == 2
    time.sleep(0.25)
    engine.up = True
    assert outage.call(engine.get) == "value"  # the trial call closes it
    assert not outage.down and gauge._value.get() == 0 and engine.calls == 3


def test_a_failed_trial_opens_it_again() -> None:
    engine = Engine()
    outage = Outage("redis", failures=1, reset_s=0.1)
    with pytest.raises(ConnectionError):
        outage.call(engine.get)
    time.sleep(0.15)
    with pytest.raises(ConnectionError):  # the trial goes through, and fails
        outage.call(engine.get)
    with pytest.raises(CircuitOpenError):
        outage.call(engine.get)
    assert engine.calls == 2 and outage.outages == 1


def test_bad_input_is_not_the_engines_fault() -> None:
    outage = Outage("redis", failures=1)

    def bad() -> None:
        raise InvalidInputError("nope")

    for _ in range(3):
        with pytest.raises(InvalidInputError):
            outage.call(bad)
    assert not outage.down


async def test_attempt_retries_a_blip_and_gives_up_once_open() -> None:
    engine = Engine()
    outage = Outage("redis", failures=3, reset_s=60, retry_delay_s=0)
    with pytest.raises(CircuitOpenError):
        await outage.attempt(engine.aget)
    assert engine.calls == 3 and outage.down
    with pytest.raises(CircuitOpenError):
        await outage.attempt(engine.aget)
    assert engine.calls == 3  # open: not even tried

    blip = Engine()
    flaky = Outage("redis", failures=3, retry_delay_s=0)
    original = blip.get

    def once() -> str:
        blip.up = blip.calls >= 1
        return original()

    blip.get = once  # type: ignore[method-assign]
    assert flaky.attempt_sync(blip.get) == "value" and not flaky.down
