"""Reconnect backoff: capped exponential with full jitter, deterministic when seeded."""

from __future__ import annotations

import random

import pytest

from ibflow_gateway_bridge.domain.backoff import reconnect_delay


class HighestDraw(random.Random):
    """An rng whose every draw is just below 1: the delay shows its ceiling."""

    def random(self) -> float:
        return 0.999999


class LowestDraw(random.Random):
    """An rng whose every draw is 0."""

    def random(self) -> float:
        return 0.0


def test_ceiling_doubles_per_attempt_until_the_cap() -> None:
    rng = HighestDraw()
    delays = [reconnect_delay(n, base=1.0, cap=60.0, rng=rng) for n in range(9)]
    assert delays == pytest.approx([1, 2, 4, 8, 16, 32, 60, 60, 60], rel=1e-5)


def test_base_scales_the_ceiling() -> None:
    rng = HighestDraw()
    assert reconnect_delay(0, base=0.5, cap=60, rng=rng) == pytest.approx(0.5, rel=1e-5)
    assert reconnect_delay(3, base=0.5, cap=60, rng=rng) == pytest.approx(4.0, rel=1e-5)


def test_full_jitter_can_reconnect_at_once() -> None:
    assert reconnect_delay(5, rng=LowestDraw()) == 0.0


@pytest.mark.parametrize("attempt", [0, 1, 5, 10, 100, 10_000])
def test_every_delay_is_within_zero_and_the_cap(attempt: int) -> None:
    rng = random.Random(attempt)
    for _ in range(200):
        delay = reconnect_delay(attempt, base=1.0, cap=30.0, rng=rng)
        assert 0.0 <= delay < 30.0
        assert delay < min(30.0, 2.0 ** min(attempt, 64))


def test_huge_attempt_numbers_do_not_overflow() -> None:
    assert reconnect_delay(10**6, cap=60.0, rng=HighestDraw()) == pytest.approx(60.0, rel=1e-5)


def test_seeded_rng_gives_the_same_delays() -> None:
    first = [reconnect_delay(n, rng=random.Random(42)) for n in range(10)]
    second = [reconnect_delay(n, rng=random.Random(42)) for n in range(10)]
    assert first == second


def test_jitter_spreads_portfolios_reconnecting_together() -> None:
    delays = {reconnect_delay(6, cap=60.0, rng=random.Random(seed)) for seed in range(50)}
    assert len(delays) == 50
    assert min(delays) < 20.0 < 40.0 < max(delays)


def test_delays_grow_on_average() -> None:
    rng = random.Random(7)
    means = [sum(reconnect_delay(n, rng=rng) for _ in range(2000)) / 2000 for n in range(5)]
    assert means == sorted(means)
    assert means[4] > 4 * means[0]


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "field"),
    [
        (-1, 1.0, 60.0, "attempt"),
        (0, 0.0, 60.0, "base"),
        (0, -1.0, 60.0, "base"),
        (0, 5.0, 1.0, "cap"),
    ],
)
def test_invalid_arguments_are_refused(attempt: int, base: float, cap: float, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        reconnect_delay(attempt, base=base, cap=cap, rng=random.Random(0))
