"""streams/idle.py: a partition the worker owns is idle after a quiet spell of wall time."""

from __future__ import annotations

from streams.idle import IDLE_AFTER_MIN_S, IdlePartitions, idle_after_s


def test_idle_after_the_quiet_spell_and_not_before() -> None:
    idle = IdlePartitions(30.0)
    idle.assign([0, 1, 2], now_ms=0)
    idle.delivered([0, 1], now_ms=20_000)
    assert idle.idle(29_999) == ()
    assert idle.idle(30_000) == (2,)  # assigned at 0 and never heard since
    idle.delivered([0], now_ms=49_000)
    assert idle.idle(50_000) == (1, 2)


def test_a_revoked_partition_is_forgotten_and_a_kept_one_keeps_its_time() -> None:
    idle = IdlePartitions(30.0)
    idle.assign([0, 1], now_ms=0)
    idle.assign([1, 3], now_ms=25_000)
    assert idle.idle(30_000) == (1,)
    assert idle.idle(55_000) == (1, 3)


def test_the_quiet_spell_grows_with_the_kind_period() -> None:
    assert idle_after_s(10.0) == IDLE_AFTER_MIN_S
    assert idle_after_s(60.0) == 180.0
