"""The market data subscription registry: reference counting per holder, leases
that cancel orphans, the linger before a released line is cancelled, the line limit,
and the replay list after a reconnect."""

from __future__ import annotations

import math

import pytest

from ibflow_gateway_bridge.domain.subscriptions import (
    DEFAULT_LINGER_SECONDS,
    SubscribeOutcome,
    SubscriptionRegistry,
)

LEASE = 60.0
LINGER = 30.0


def _no_linger(max_lines: int = 100) -> SubscriptionRegistry:
    """A registry that cancels a line the moment its last holder leaves."""
    return SubscriptionRegistry(max_lines=max_lines, linger_seconds=0)


def test_first_subscriber_makes_the_symbol_new() -> None:
    registry = SubscriptionRegistry()

    result = registry.subscribe("aapl", "ws:1", now=0.0, lease_seconds=LEASE)

    assert result.is_new
    assert result.accepted
    assert result.outcome is SubscribeOutcome.NEW
    assert result.symbol == "AAPL"
    assert result.lease_until == 60.0
    assert result.reason is None
    assert registry.active() == ["AAPL"]
    assert "aapl" in registry


def test_second_subscriber_does_not_request_again() -> None:
    registry = SubscriptionRegistry()
    registry.subscribe("AAPL", "ws:1", now=0.0, lease_seconds=LEASE)

    result = registry.subscribe(" aapl ", "position-monitor", now=1.0, lease_seconds=LEASE)

    assert result.outcome is SubscribeOutcome.ACTIVE
    assert not result.is_new
    assert result.accepted
    assert registry.holders("AAPL") == ["position-monitor", "ws:1"]
    assert len(registry) == 1


def test_renewal_by_the_same_holder_is_not_new_and_extends_the_lease() -> None:
    registry = SubscriptionRegistry()
    registry.subscribe("AAPL", "ws:1", now=0.0, lease_seconds=LEASE)

    result = registry.subscribe("AAPL", "ws:1", now=50.0, lease_seconds=LEASE)

    assert result.outcome is SubscribeOutcome.ACTIVE
    assert registry.lease_until("aapl", "ws:1") == 110.0
    assert registry.holders("AAPL") == ["ws:1"]


def test_without_linger_only_the_last_unsubscribe_cancels() -> None:
    registry = _no_linger()
    registry.subscribe("AAPL", "ws:1", now=0.0, lease_seconds=LEASE)
    registry.subscribe("AAPL", "ws:2", now=0.0, lease_seconds=LEASE)

    assert registry.unsubscribe("AAPL", "ws:1", now=1.0) is False
    assert registry.active() == ["AAPL"]
    assert registry.unsubscribe("aapl", "ws:2", now=1.0) is True
    assert registry.active() == []
    assert registry.holders("AAPL") == []


def test_unsubscribing_what_is_not_held_cancels_nothing() -> None:
    registry = _no_linger()
    registry.subscribe("AAPL", "ws:1", now=0.0, lease_seconds=LEASE)

    assert registry.unsubscribe("MSFT", "ws:1", now=1.0) is False
    assert registry.unsubscribe("AAPL", "ws:2", now=1.0) is False
    assert registry.unsubscribe("AAPL", "ws:1", now=1.0) is True
    assert registry.unsubscribe("AAPL", "ws:1", now=1.0) is False  # twice is harmless


def test_without_linger_lease_expiry_cancels_orphans_but_not_renewed_symbols() -> None:
    registry = _no_linger()
    registry.subscribe("AAPL", "ws:crashed", now=0.0, lease_seconds=LEASE)
    registry.subscribe("MSFT", "ws:alive", now=0.0, lease_seconds=LEASE)
    registry.subscribe("SPY", "ws:crashed", now=0.0, lease_seconds=LEASE)
    registry.subscribe("SPY", "position-monitor", now=0.0, lease_seconds=math.inf)
    registry.subscribe("MSFT", "ws:alive", now=45.0, lease_seconds=LEASE)  # renewed

    assert registry.expire(now=59.9) == []
    assert registry.next_expiry() == 60.0
    cancelled = registry.expire(now=60.0)

    assert cancelled == ["AAPL"]
    assert registry.active() == ["MSFT", "SPY"]
    assert registry.holders("SPY") == ["position-monitor"]
    assert registry.next_expiry() == 105.0
    assert registry.expire(now=105.0) == ["MSFT"]
    assert registry.expire(now=1e12) == []  # an infinite lease never expires
    assert registry.active() == ["SPY"]


def test_max_lines_refuses_a_new_symbol_with_a_reason() -> None:
    registry = SubscriptionRegistry(max_lines=3, linger_seconds=LINGER)
    for symbol in ("AAPL", "MSFT", "SPY"):
        assert registry.subscribe(symbol, "ws:1", now=0.0, lease_seconds=LEASE).is_new

    refused = registry.subscribe("QQQ", "ws:2", now=1.0, lease_seconds=LEASE)

    assert refused.outcome is SubscribeOutcome.REFUSED
    assert not refused.accepted
    assert not refused.is_new
    assert refused.lease_until is None
    assert refused.evict is None
    assert refused.reason is not None
    assert "line limit" in refused.reason
    assert "3 of 3" in refused.reason
    assert "QQQ" in refused.reason
    assert registry.active() == ["AAPL", "MSFT", "SPY"]
    assert registry.holders("QQQ") == []


def test_at_the_limit_active_symbols_can_still_be_held_and_freed_lines_reused() -> None:
    registry = _no_linger(max_lines=2)
    registry.subscribe("AAPL", "ws:1", now=0.0, lease_seconds=LEASE)
    registry.subscribe("MSFT", "ws:1", now=0.0, lease_seconds=LEASE)

    assert registry.subscribe("MSFT", "ws:2", now=1.0, lease_seconds=LEASE).accepted
    assert registry.unsubscribe("AAPL", "ws:1", now=1.0) is True
    reused = registry.subscribe("QQQ", "ws:2", now=2.0, lease_seconds=LEASE)
    assert reused.is_new
    assert reused.evict is None


def test_default_is_ibs_100_lines() -> None:
    registry = SubscriptionRegistry()
    for i in range(100):
        assert registry.subscribe(f"S{i}", "ws:1", now=0.0, lease_seconds=LEASE).is_new

    assert registry.max_lines == 100
    assert not registry.subscribe("ONEMORE", "ws:1", now=0.0, lease_seconds=LEASE).accepted


def test_replay_list_after_a_reconnect_is_every_active_symbol_once_sorted() -> None:
    registry = SubscriptionRegistry()
    registry.subscribe("msft", "ws:1", now=0.0, lease_seconds=LEASE)
    registry.subscribe("AAPL", "ws:1", now=0.0, lease_seconds=LEASE)
    registry.subscribe("Aapl", "position-monitor", now=0.0, lease_seconds=LEASE)
    registry.subscribe("SPY", "ws:2", now=0.0, lease_seconds=LEASE)
    registry.unsubscribe("SPY", "ws:2", now=1.0)

    # The registry outlives the connection: nothing held is forgotten by a 1101 or
    # reconnect. SPY lingers (its line is still streaming) but is not replayed.
    assert registry.active() == ["AAPL", "MSFT"]
    assert registry.lingering() == ["SPY"]


def test_without_linger_a_holder_leaving_drops_all_its_holdings() -> None:
    registry = _no_linger()
    registry.subscribe("AAPL", "ws:1", now=0.0, lease_seconds=LEASE)
    registry.subscribe("MSFT", "ws:1", now=0.0, lease_seconds=LEASE)
    registry.subscribe("MSFT", "ws:2", now=0.0, lease_seconds=LEASE)

    assert registry.unsubscribe_all("ws:1", now=1.0) == ["AAPL"]
    assert registry.active() == ["MSFT"]
    assert registry.holders("MSFT") == ["ws:2"]


@pytest.mark.parametrize(
    ("symbol", "holder", "lease", "message"),
    [
        ("  ", "ws:1", LEASE, "symbol"),
        ("AAPL", "", LEASE, "holder"),
        ("AAPL", "ws:1", 0.0, "lease_seconds"),
        ("AAPL", "ws:1", -5.0, "lease_seconds"),
        ("AAPL", "ws:1", math.nan, "lease_seconds"),
    ],
)
def test_bad_subscriptions_are_rejected(
    symbol: str, holder: str, lease: float, message: str
) -> None:
    registry = SubscriptionRegistry()
    with pytest.raises(ValueError, match=message):
        registry.subscribe(symbol, holder, now=0.0, lease_seconds=lease)
    assert registry.active() == []


def test_max_lines_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_lines"):
        SubscriptionRegistry(max_lines=0)


@pytest.mark.parametrize("linger", [-1.0, math.nan])
def test_linger_must_not_be_negative(linger: float) -> None:
    with pytest.raises(ValueError, match="linger_seconds"):
        SubscriptionRegistry(linger_seconds=linger)


# ---------------------------------------------------------------------- linger


def test_default_linger_is_30_seconds() -> None:
    assert SubscriptionRegistry().linger_seconds == DEFAULT_LINGER_SECONDS == 30.0


def test_position_closed_and_reopened_within_linger_keeps_the_line() -> None:
    registry = SubscriptionRegistry(linger_seconds=LINGER)
    registry.subscribe("AAPL", "position-monitor", now=0.0, lease_seconds=math.inf)

    assert registry.unsubscribe("AAPL", "position-monitor", now=10.0) is False
    assert registry.active() == []
    assert registry.lingering() == ["AAPL"]
    assert registry.lingering_until("aapl") == 40.0
    assert "AAPL" in registry
    assert len(registry) == 1
    reopened = registry.subscribe("AAPL", "position-monitor", now=10.4, lease_seconds=math.inf)

    assert reopened.outcome is SubscribeOutcome.ACTIVE
    assert not reopened.is_new
    assert reopened.evict is None
    assert registry.active() == ["AAPL"]
    assert registry.lingering() == []
    assert registry.lingering_until("AAPL") is None
    assert registry.expire(now=1e9) == []  # held again: the old linger does not cancel it


def test_released_line_is_cancelled_once_the_linger_is_over() -> None:
    registry = SubscriptionRegistry(linger_seconds=LINGER)
    registry.subscribe("AAPL", "ws:1", now=0.0, lease_seconds=LEASE)
    registry.subscribe("MSFT", "ws:1", now=0.0, lease_seconds=LEASE)
    registry.unsubscribe("AAPL", "ws:1", now=5.0)

    assert registry.next_expiry() == 35.0
    assert registry.expire(now=34.9) == []
    assert registry.expire(now=35.0) == ["AAPL"]
    assert registry.lingering() == []
    assert "AAPL" not in registry
    assert registry.active() == ["MSFT"]
    assert registry.expire(now=35.0) == []  # returned once
    # Past the linger the symbol is gone: subscribing again requests it anew.
    assert registry.subscribe("AAPL", "ws:1", now=36.0, lease_seconds=LEASE).is_new


def test_a_holder_leaving_starts_the_linger_of_what_only_it_held() -> None:
    registry = SubscriptionRegistry(linger_seconds=LINGER)
    registry.subscribe("AAPL", "ws:1", now=0.0, lease_seconds=LEASE)
    registry.subscribe("MSFT", "ws:1", now=0.0, lease_seconds=LEASE)
    registry.subscribe("MSFT", "ws:2", now=0.0, lease_seconds=LEASE)

    assert registry.unsubscribe_all("ws:1", now=2.0) == []
    assert registry.active() == ["MSFT"]
    assert registry.lingering() == ["AAPL"]
    assert registry.expire(now=32.0) == ["AAPL"]


def test_an_expired_lease_lingers_from_the_lease_end() -> None:
    registry = SubscriptionRegistry(linger_seconds=LINGER)
    registry.subscribe("AAPL", "ws:crashed", now=0.0, lease_seconds=LEASE)
    registry.subscribe("MSFT", "ws:crashed", now=0.0, lease_seconds=LEASE)

    assert registry.expire(now=61.0) == []
    assert registry.lingering() == ["AAPL", "MSFT"]
    assert registry.lingering_until("AAPL") == 90.0
    assert registry.subscribe("MSFT", "ws:back", now=62.0, lease_seconds=LEASE).outcome is (
        SubscribeOutcome.ACTIVE
    )
    assert registry.expire(now=90.0) == ["AAPL"]
    assert registry.active() == ["MSFT"]


def test_an_expiry_checked_late_cancels_a_line_whose_linger_is_already_over() -> None:
    registry = SubscriptionRegistry(linger_seconds=LINGER)
    registry.subscribe("AAPL", "ws:crashed", now=0.0, lease_seconds=LEASE)

    assert registry.expire(now=95.0) == ["AAPL"]  # lease ended at 60, linger at 90
    assert len(registry) == 0


def test_new_symbol_at_the_line_limit_evicts_the_linger_that_ends_first() -> None:
    registry = SubscriptionRegistry(max_lines=3, linger_seconds=LINGER)
    for symbol in ("AAPL", "MSFT", "SPY"):
        registry.subscribe(symbol, "ws:1", now=0.0, lease_seconds=LEASE)
    registry.unsubscribe("MSFT", "ws:1", now=5.0)  # lingers until 35
    registry.unsubscribe("AAPL", "ws:1", now=1.0)  # lingers until 31: ends first

    result = registry.subscribe("QQQ", "ws:2", now=6.0, lease_seconds=LEASE)

    assert result.outcome is SubscribeOutcome.NEW
    assert result.evict == "AAPL"
    assert result.reason is None
    assert registry.active() == ["QQQ", "SPY"]
    assert registry.lingering() == ["MSFT"]
    assert len(registry) == 3
    assert registry.expire(now=31.0) == []  # the evicted line is not returned again
    nxt = registry.subscribe("IWM", "ws:2", now=7.0, lease_seconds=LEASE)
    assert nxt.evict == "MSFT"
    refused = registry.subscribe("TSLA", "ws:2", now=8.0, lease_seconds=LEASE)
    assert refused.outcome is SubscribeOutcome.REFUSED
    assert refused.evict is None
    assert refused.reason is not None
    assert "3 of 3" in refused.reason


def test_below_the_line_limit_nothing_lingering_is_evicted() -> None:
    registry = SubscriptionRegistry(max_lines=3, linger_seconds=LINGER)
    registry.subscribe("AAPL", "ws:1", now=0.0, lease_seconds=LEASE)
    registry.unsubscribe("AAPL", "ws:1", now=1.0)

    result = registry.subscribe("MSFT", "ws:1", now=2.0, lease_seconds=LEASE)

    assert result.is_new
    assert result.evict is None
    assert registry.lingering() == ["AAPL"]


def test_linger_zero_cancels_at_once_as_before() -> None:
    registry = SubscriptionRegistry(max_lines=1, linger_seconds=0)
    registry.subscribe("AAPL", "ws:1", now=0.0, lease_seconds=LEASE)

    assert registry.unsubscribe("AAPL", "ws:1", now=1.0) is True
    assert registry.lingering() == []
    assert len(registry) == 0
    assert registry.subscribe("AAPL", "ws:1", now=1.1, lease_seconds=LEASE).is_new
    assert registry.expire(now=61.1) == ["AAPL"]
    assert registry.lingering() == []


def test_undoing_a_failed_subscription_cancels_at_once_despite_the_linger() -> None:
    registry = SubscriptionRegistry(linger_seconds=LINGER)
    registry.subscribe("NOSUCH", "ws:1", now=0.0, lease_seconds=LEASE)

    assert registry.unsubscribe("NOSUCH", "ws:1", now=0.1, linger=False) is True
    assert len(registry) == 0


def test_lines_lost_with_the_connection_forget_what_lingers() -> None:
    registry = SubscriptionRegistry(linger_seconds=LINGER)
    registry.subscribe("AAPL", "ws:1", now=0.0, lease_seconds=LEASE)
    registry.subscribe("MSFT", "ws:1", now=0.0, lease_seconds=LEASE)
    registry.subscribe("SPY", "ws:1", now=0.0, lease_seconds=LEASE)
    registry.unsubscribe("SPY", "ws:1", now=1.0)
    registry.unsubscribe("AAPL", "ws:1", now=1.0)

    assert registry.active() == ["MSFT"]  # the replay list: held symbols only
    assert registry.drop_lingering() == ["AAPL", "SPY"]
    assert registry.lingering() == []
    assert registry.active() == ["MSFT"]
    assert registry.expire(now=100.0) == ["MSFT"]  # the dropped ones are not returned
    # A dropped symbol has no line any more: subscribing again requests it.
    assert registry.subscribe("AAPL", "ws:1", now=101.0, lease_seconds=LEASE).is_new
    assert registry.drop_lingering() == []
