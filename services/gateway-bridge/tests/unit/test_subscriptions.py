"""The market data subscription registry: reference counting per holder, leases
that cancel orphans, the line limit, and the replay list after a reconnect."""

from __future__ import annotations

import math

import pytest

from ibflow_gateway_bridge.domain.subscriptions import (
    SubscribeOutcome,
    SubscriptionRegistry,
)

LEASE = 60.0


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


def test_only_the_last_unsubscribe_cancels() -> None:
    registry = SubscriptionRegistry()
    registry.subscribe("AAPL", "ws:1", now=0.0, lease_seconds=LEASE)
    registry.subscribe("AAPL", "ws:2", now=0.0, lease_seconds=LEASE)

    assert registry.unsubscribe("AAPL", "ws:1") is False
    assert registry.active() == ["AAPL"]
    assert registry.unsubscribe("aapl", "ws:2") is True
    assert registry.active() == []
    assert registry.holders("AAPL") == []


def test_unsubscribing_what_is_not_held_cancels_nothing() -> None:
    registry = SubscriptionRegistry()
    registry.subscribe("AAPL", "ws:1", now=0.0, lease_seconds=LEASE)

    assert registry.unsubscribe("MSFT", "ws:1") is False
    assert registry.unsubscribe("AAPL", "ws:2") is False
    assert registry.unsubscribe("AAPL", "ws:1") is True
    assert registry.unsubscribe("AAPL", "ws:1") is False  # twice is harmless


def test_lease_expiry_cancels_orphans_but_not_renewed_symbols() -> None:
    registry = SubscriptionRegistry()
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
    registry = SubscriptionRegistry(max_lines=3)
    for symbol in ("AAPL", "MSFT", "SPY"):
        assert registry.subscribe(symbol, "ws:1", now=0.0, lease_seconds=LEASE).is_new

    refused = registry.subscribe("QQQ", "ws:2", now=1.0, lease_seconds=LEASE)

    assert refused.outcome is SubscribeOutcome.REFUSED
    assert not refused.accepted
    assert not refused.is_new
    assert refused.lease_until is None
    assert refused.reason is not None
    assert "line limit" in refused.reason
    assert "3 of 3" in refused.reason
    assert "QQQ" in refused.reason
    assert registry.active() == ["AAPL", "MSFT", "SPY"]
    assert registry.holders("QQQ") == []


def test_at_the_limit_active_symbols_can_still_be_held_and_freed_lines_reused() -> None:
    registry = SubscriptionRegistry(max_lines=2)
    registry.subscribe("AAPL", "ws:1", now=0.0, lease_seconds=LEASE)
    registry.subscribe("MSFT", "ws:1", now=0.0, lease_seconds=LEASE)

    assert registry.subscribe("MSFT", "ws:2", now=1.0, lease_seconds=LEASE).accepted
    assert registry.unsubscribe("AAPL", "ws:1") is True
    assert registry.subscribe("QQQ", "ws:2", now=2.0, lease_seconds=LEASE).is_new


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
    registry.unsubscribe("SPY", "ws:2")

    # The registry outlives the connection: nothing is forgotten by a 1101 or reconnect.
    assert registry.active() == ["AAPL", "MSFT"]


def test_a_holder_leaving_drops_all_its_holdings() -> None:
    registry = SubscriptionRegistry()
    registry.subscribe("AAPL", "ws:1", now=0.0, lease_seconds=LEASE)
    registry.subscribe("MSFT", "ws:1", now=0.0, lease_seconds=LEASE)
    registry.subscribe("MSFT", "ws:2", now=0.0, lease_seconds=LEASE)

    assert registry.unsubscribe_all("ws:1") == ["AAPL"]
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
