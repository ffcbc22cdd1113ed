"""Planning the morning entry (sizing into entry orders, one cash budget, deterministic
ids) and loading the strategies a user plugs in."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from ibflow.contracts.enums import OrderPurpose, OrderSide, OrderType, TimeInForce
from ibflow.contracts.recommendations import Recommendation
from ibflow.contracts.session import SessionEventEmitted, occurrence_id
from ibflow_order_manager.domain import RiskLimits, Skipped, SkipReason
from ibflow_order_manager.domain.sizing import entry_client_order_id, entry_position_id
from ibflow_order_manager.entry import REQUESTED_BY, PlannedEntry, plan_entries
from ibflow_order_manager.repository import Portfolio, StoredRecommendation
from ibflow_order_manager.strategy import (
    StrategyLoadError,
    StrategyRegistry,
    load_strategies,
    load_strategy,
    strategy_source,
)

D = Decimal
DAY = date(2025, 3, 10)


def portfolio(cash: str = "100000", reserved: str = "0", *, fractional: bool = False) -> Portfolio:
    return Portfolio(
        id="demo",
        currency="USD",
        cash=D(cash),
        reserved_cash=D(reserved),
        fractional_shares=fractional,
        limits=RiskLimits(),
        halted=False,
        halted_reason=None,
        enabled=True,
        stale_order_minutes=10,
        revision=1,
        reservation_buffer=D("0.01"),
        cancel_entries_on_halt=False,
    )


def stored(rec_id: int, **fields: Any) -> StoredRecommendation:
    return StoredRecommendation(
        id=rec_id,
        portfolio_id="demo",
        session_date=DAY,
        item=Recommendation.model_validate(fields),
        status="pending",
        client_order_id=None,
    )


def session_event(sequence: int = 0) -> SessionEventEmitted:
    at = datetime(2025, 3, 10, 14, 35, tzinfo=UTC)
    return SessionEventEmitted(
        name="morning_entry",
        occurrence_id=occurrence_id("morning_entry", DAY, sequence),
        session_date=DAY,
        scheduled_for=at,
        emitted_at=at,
        session_open=datetime(2025, 3, 10, 13, 30, tzinfo=UTC),
        session_close=datetime(2025, 3, 10, 20, 0, tzinfo=UTC),
    )


def plan(
    recs: list[StoredRecommendation],
    prices: dict[str, Decimal | None],
    *,
    book: Portfolio | None = None,
    cause: SessionEventEmitted | None = None,
) -> list[PlannedEntry | Skipped]:
    book = book or portfolio()
    return plan_entries(book, recs, prices, equity=book.cash, session_date=DAY, cause=cause)


def planned(result: PlannedEntry | Skipped) -> PlannedEntry:
    assert isinstance(result, PlannedEntry), result
    return result


def skipped(result: PlannedEntry | Skipped) -> Skipped:
    assert isinstance(result, Skipped), result
    return result


# ---------------------------------------------------------------------- sizing into orders


def test_allocation_of_equity_becomes_a_market_entry_carrying_stop_target_and_the_price_used() -> (
    None
):
    event = session_event()
    rec = stored(
        7, symbol="AAPL", allocation="0.1", stop_loss="95", take_profit="110", entry_type="MKT"
    )

    [result] = plan([rec], {"AAPL": D("100")}, cause=event)

    entry = planned(result)
    order = entry.order
    assert entry.recommendation_id == 7
    assert order.quantity == D(100)  # 10 % of 100,000 at 100
    assert order.order_type is OrderType.MKT
    assert order.limit_price is None
    assert order.reference_price == D("100")
    assert entry.estimated_cost == D("10100.00")  # reserved: 100 x 100 x 1.01
    assert order.side is OrderSide.BUY
    assert order.purpose is OrderPurpose.ENTRY
    assert order.tif is TimeInForce.DAY
    assert order.currency == "USD"
    assert (order.stop_loss, order.take_profit) == (D("95"), D("110"))
    assert order.requested_by == REQUESTED_BY == "order-manager:morning_entry"
    assert order.client_order_id == "entry-demo-20250310-AAPL"
    assert order.position_id == "pos-demo-20250310-AAPL"
    assert order.correlation_id == event.event_id
    assert order.causation_id == event.event_id


def test_quantity_recommendation_as_limit_entry_keeps_its_quantity_and_limit() -> None:
    rec = stored(1, symbol="MSFT", quantity="12", entry_type="LMT", limit_price="400.50")

    [result] = plan([rec], {})

    order = planned(result).order
    assert order.quantity == D(12)
    assert order.order_type is OrderType.LMT
    assert order.limit_price == D("400.50")
    assert order.reference_price is None  # valued at its limit: no market price needed
    assert planned(result).estimated_cost == D("4806.00")


def test_fractional_portfolio_sizes_allocation_to_four_decimals() -> None:
    rec = stored(1, symbol="NVDA", allocation="0.05")

    [result] = plan([rec], {"NVDA": D("880")}, book=portfolio(fractional=True))

    assert planned(result).order.quantity == D("5.6818")  # 5000 / 880, rounded down


def test_market_entry_without_a_price_is_skipped_as_no_price() -> None:
    recs = [stored(1, symbol="AAPL", quantity="10"), stored(2, symbol="MSFT", quantity="10")]

    results = plan(recs, {"AAPL": None})

    assert [skipped(r).reason for r in results] == [SkipReason.NO_PRICE, SkipReason.NO_PRICE]
    assert skipped(results[0]).message.startswith("no_price: no reference price for AAPL")


def test_entry_costing_more_than_the_available_cash_is_skipped_as_insufficient_cash() -> None:
    rec = stored(1, symbol="AAPL", quantity="100")
    book = portfolio(cash="12000", reserved="3000")  # available 9000

    [result] = plan([rec], {"AAPL": D("100")}, book=book)

    assert skipped(result).reason is SkipReason.INSUFFICIENT_CASH
    assert skipped(result).message == (
        "insufficient_cash: 100 AAPL needs 10100.00, available 9000.00"
    )


def test_two_recommendations_share_the_cash_budget_so_the_second_is_skipped() -> None:
    recs = [stored(1, symbol="AAPL", quantity="100"), stored(2, symbol="MSFT", quantity="50")]

    first, second = plan(recs, {"AAPL": D("100"), "MSFT": D("100")}, book=portfolio("15000"))

    assert planned(first).estimated_cost == D("10100.00")
    assert skipped(second).message == (
        "insufficient_cash: 50 MSFT needs 5050.00, available 4900.00"
    )


def test_a_smaller_entry_after_a_skipped_one_still_fits_the_budget() -> None:
    recs = [
        stored(1, symbol="AAPL", quantity="200"),
        stored(2, symbol="MSFT", quantity="10"),
    ]

    first, second = plan(recs, {"AAPL": D("100"), "MSFT": D("100")}, book=portfolio("5000"))

    assert skipped(first).reason is SkipReason.INSUFFICIENT_CASH
    assert planned(second).order.quantity == D(10)  # a skip spends nothing


def test_explicit_budget_overrides_the_portfolio_available_cash() -> None:
    rec = stored(1, symbol="AAPL", quantity="10")
    book = portfolio("100000")

    [result] = plan_entries(
        book, [rec], {"AAPL": D("100")}, equity=book.cash, session_date=DAY, available_cash=D(500)
    )

    assert skipped(result).reason is SkipReason.INSUFFICIENT_CASH


def test_ids_are_deterministic_so_a_refired_session_plans_the_same_orders() -> None:
    recs = [stored(1, symbol="AAPL", quantity="10"), stored(2, symbol="BRK B", quantity="1")]
    prices: dict[str, Decimal | None] = {"AAPL": D("100"), "BRK B": D("400")}

    first = [planned(r).order for r in plan(recs, prices, cause=session_event(0))]
    again = [planned(r).order for r in plan(recs, prices, cause=session_event(1))]

    assert [o.client_order_id for o in first] == [o.client_order_id for o in again]
    assert [o.position_id for o in first] == [o.position_id for o in again]
    assert first[1].client_order_id == entry_client_order_id("demo", DAY, "BRK B")
    assert first[1].client_order_id == "entry-demo-20250310-BRK_20B"
    assert first[1].position_id == entry_position_id("demo", DAY, "BRK B")
    assert first[0].event_id != again[0].event_id  # distinct commands, one idempotency key


def test_sell_entry_does_not_spend_the_cash_budget() -> None:
    recs = [
        stored(1, symbol="TSLA", quantity="10", side="SELL"),
        stored(2, symbol="AAPL", quantity="90"),
    ]

    first, second = plan(recs, {"TSLA": D("175"), "AAPL": D("100")}, book=portfolio("9100"))

    assert planned(first).order.side is OrderSide.SELL
    assert planned(second).estimated_cost == D("9090.00")


# ---------------------------------------------------------------------- strategies

STRATEGY_MODULE = textwrap.dedent(
    """
    from datetime import date
    from decimal import Decimal

    from ibflow.contracts import Recommendation


    class GapUp:
        name = "gap-up"

        async def recommend(self, portfolio_id: str, session_date: date) -> list[Recommendation]:
            return [Recommendation(symbol="AAPL", allocation=Decimal("0.1"))]


    def make_fade():
        strategy = GapUp()
        strategy.name = "fade"
        return strategy


    instance = GapUp()


    class NoName:
        async def recommend(self, portfolio_id, session_date):
            return []


    class Blocking:
        name = "blocking"

        def recommend(self, portfolio_id, session_date):
            return []


    class WrongArguments:
        name = "wrong"

        async def recommend(self):
            return []


    class NeedsArguments:
        name = "needs"

        def __init__(self, threshold):
            self.threshold = threshold

        async def recommend(self, portfolio_id, session_date):
            return []
    """
)


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A user's strategy module, importable as ``ibflow_test_user_strategies``."""
    name = "ibflow_test_user_strategies"
    (tmp_path / f"{name}.py").write_text(STRATEGY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_strategies_load_from_class_instance_and_factory_paths(user_module: str) -> None:
    module = importlib.import_module(user_module)

    from_class = load_strategy(f"{user_module}:GapUp")
    from_instance = load_strategy(f" {user_module}:instance ")
    from_factory = load_strategy(f"{user_module}:make_fade")

    assert isinstance(from_class, module.GapUp)
    assert from_instance is module.instance
    assert (from_class.name, from_instance.name, from_factory.name) == ("gap-up", "gap-up", "fade")


def test_duplicate_strategy_names_are_refused_naming_the_path(user_module: str) -> None:
    with pytest.raises(StrategyLoadError, match=r"instance'.*'gap-up' is already used"):
        load_strategies([f"{user_module}:GapUp", f"{user_module}:instance"])


async def test_loaded_strategy_recommends_and_is_recorded_under_its_name(user_module: str) -> None:
    registry = load_strategies([f"{user_module}:GapUp", f"{user_module}:make_fade"])

    assert registry.names == ("gap-up", "fade")
    strategy = registry.get("fade")
    assert strategy is not None
    assert strategy_source(strategy) == "strategy:fade"
    [item] = await strategy.recommend("demo", DAY)
    assert item.symbol == "AAPL"


@pytest.mark.parametrize(
    ("attribute", "reason"),
    [
        ("Missing", r"has no attribute 'Missing'"),
        ("NoName", r"NoName needs a 'name' slug"),
        ("Blocking", r"needs an 'async def recommend"),
        ("WrongArguments", r"cannot be called as recommend\(portfolio_id, session_date\)"),
        ("NeedsArguments", r"cannot instantiate NeedsArguments without arguments"),
    ],
)
def test_unusable_strategy_is_refused_with_the_path_and_the_reason(
    user_module: str, attribute: str, reason: str
) -> None:
    path = f"{user_module}:{attribute}"

    with pytest.raises(StrategyLoadError, match=reason) as caught:
        load_strategy(path)

    assert caught.value.path == path
    assert str(caught.value).startswith(f"strategy {path!r}: ")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("no_such_module_ibflow:Thing", r"cannot import module 'no_such_module_ibflow'"),
        ("just_a_module", r"expected 'module:attribute'"),
        ("os:sep", r"str needs a 'name' slug"),
    ],
)
def test_bad_strategy_paths_are_refused_naming_the_path(path: str, reason: str) -> None:
    with pytest.raises(StrategyLoadError, match=reason):
        load_strategy(path)


def test_empty_setting_gives_no_strategies() -> None:
    registry = load_strategies([])

    assert len(registry) == 0
    assert list(StrategyRegistry()) == []
