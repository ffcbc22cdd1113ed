"""The compact ``repr`` of the ib_async objects ib_async's wrapper logs per message."""

from __future__ import annotations

from datetime import UTC, datetime

from ib_async import (
    CommissionReport,
    Contract,
    Execution,
    Fill,
    Order,
    OrderStatus,
    PortfolioItem,
    Position,
    Trade,
)

import ibflow_gateway_bridge.ib.adapter  # noqa: F401 - installs the reprs on import


def _trade(fills: int) -> Trade:
    contract = Contract(symbol="AAPL", conId=265598, secType="STK", exchange="SMART")
    order = Order(
        orderId=7,
        permId=9001,
        clientId=11,
        orderRef="coid-1",
        action="BUY",
        totalQuantity=2000,
        orderType="LMT",
        lmtPrice=150.0,
    )
    status = OrderStatus(orderId=7, status="Submitted", filled=100, remaining=2000)
    trade = Trade(contract, order, status, [], [])
    for n in range(fills):
        execution = Execution(execId=f"e{n}", permId=9001, orderId=7, shares=100, price=150.0)
        trade.fills.append(
            Fill(contract, execution, CommissionReport(execId=f"e{n}"), datetime.now(UTC))
        )
    return trade


def test_a_trade_with_many_fills_reprs_as_one_short_line_naming_its_ids() -> None:
    text = f"orderStatus: {_trade(fills=20)}"

    assert "\n" not in text
    assert len(text) < 300
    for part in ("orderId=7", "permId=9001", "orderRef='coid-1'", "AAPL", "fills=20"):
        assert part in text
    assert "e19" not in text  # the fills are counted, not listed


def test_the_cost_of_a_trades_repr_does_not_grow_with_its_fills() -> None:
    assert len(repr(_trade(fills=200))) <= len(repr(_trade(fills=2))) + 2  # "fills=200"


def test_fill_execution_commission_position_and_portfolio_item_name_their_ids() -> None:
    contract = Contract(symbol="MSFT", conId=272093)
    execution = Execution(execId="0001.01", permId=5, orderRef="x", shares=10, price=1.5)
    report = CommissionReport(execId="0001.01", commission=1.0, currency="USD")
    fill = Fill(contract, execution, report, datetime.now(UTC))
    position = Position("DU1", contract, 10.0, 1.5)
    item = PortfolioItem(contract, 10.0, 1.6, 16.0, 1.5, 1.0, 0.0, "DU1")

    assert "execId='0001.01'" in repr(fill)
    assert "MSFT" in repr(fill)
    assert "commission=1.0 USD" in repr(report)
    assert (
        repr(position) == "Position(account='DU1', MSFT conId=272093, position=10.0, avgCost=1.5)"
    )
    assert "marketPrice=1.6" in repr(item)
    assert "conId=272093" in repr(item)
