"""The loop watchdog: a stall of the event loop is measured and logged with what held it."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from prometheus_client import CollectorRegistry

from streams.loop_watchdog import LoopWatchdog


def _stalls(registry: CollectorRegistry) -> tuple[float, float]:
    count = registry.get_sample_value("cityops_loop_stall_seconds_count") or 0.0
    total = registry.get_sample_value("cityops_loop_stall_seconds_sum") or 0.0
    return count, total


def hold_the_loop_for(seconds: float) -> None:
    time.sleep(seconds)  # what a long batch does to the loop


async def test_a_stall_is_measured_and_logged_with_the_code_that_held_the_loop(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    watchdog = LoopWatchdog(registry, stall_s=0.02, log_s=0.1)
    watchdog.start()
    try:
        await asyncio.sleep(0.05)
        assert _stalls(registry) == (0.0, 0.0)  # a loop that turns is not stalled
        with caplog.at_level(logging.WARNING, logger="streams.loop_watchdog"):
            hold_the_loop_for(0.25)
            deadline = time.monotonic() + 5
            while _stalls(registry)[0] < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        count, total = _stalls(registry)
        assert count == 1
        assert 0.2 <= total < 0.5
        (record,) = [r for r in caplog.records if "stalled" in r.getMessage()]
        assert "hold_the_loop_for" in record.getMessage()
    finally:
        await watchdog.stop()


async def test_short_stalls_are_counted_but_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    watchdog = LoopWatchdog(registry, stall_s=0.02, log_s=0.5)
    watchdog.start()
    try:
        with caplog.at_level(logging.WARNING, logger="streams.loop_watchdog"):
            await asyncio.sleep(0.02)
            hold_the_loop_for(0.1)
            deadline = time.monotonic() + 5
            while _stalls(registry)[0] < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        assert _stalls(registry)[0] == 1
        assert not [r for r in caplog.records if "stalled" in r.getMessage()]
    finally:
        await watchdog.stop()
