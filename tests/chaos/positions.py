"""Position-monitor side of the chaos harness: open day-trade positions through the
order-manager, keep a live market ticking, and check every position against the
broker (one exit each, quantity and P&L to the cent)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from ibflow.bus import request, subjects
from ibflow.contracts import CommandAccepted, OrderPurpose, OrderSide, OrderType, SubmitOrder

from .harness import POS_ACCOUNT, POS_PORTFOLIO, POSITION_SYMBOLS, Stack, wait_for

ENTRY_PRICE = Decimal(100)
STOP = Decimal(95)
TARGET = Decimal(110)
QUANTITY = Decimal(10)


def position_id(symbol: str) -> str:
    return f"pos-{symbol.lower()}"


async def open_positions(stack: Stack, symbols: Iterable[str]) -> None:
    """A LMT entry (BUY 10 at 100.50, stop 95, target 110) per symbol in the position
    portfolio; waits until every position is OPEN."""
    symbols = list(symbols)
    for symbol in symbols:
        cmd = SubmitOrder(
            portfolio_id=POS_PORTFOLIO,
            client_order_id=f"entry:{position_id(symbol)}",
            symbol=symbol,
            side=OrderSide.BUY,
            order_type=OrderType.LMT,
            quantity=QUANTITY,
            limit_price=Decimal("100.50"),
            purpose=OrderPurpose.ENTRY,
            position_id=position_id(symbol),
            stop_loss=STOP,
            take_profit=TARGET,
            requested_by="user:chaos",
        )
        await request(stack.nc, subjects.SUBMIT_ORDER, cmd, CommandAccepted, timeout=30)

    async def all_open() -> bool:
        rows = await stack.fetch(
            "SELECT status FROM positions WHERE portfolio_id = $1 AND status = 'OPEN'",
            POS_PORTFOLIO,
        )
        return len(rows) == len(symbols)

    await wait_for(all_open, within=60, what="positions open")


async def positions_left(stack: Stack) -> str | None:
    """Positions of the position portfolio not closed yet (or commissions pending)."""
    rows = await stack.fetch(
        "SELECT id, status FROM positions WHERE portfolio_id = $1"
        " AND (status <> 'CLOSED' OR commissions_pending > 0)",
        POS_PORTFOLIO,
    )
    return f"positions not closed: {[tuple(r) for r in rows]}" if rows else None


async def assert_positions_match_the_broker(
    stack: Stack, symbols: Iterable[str]
) -> list[dict[str, Any]]:
    """Each symbol's position CLOSED once: one exit order at the broker (``exit:<id>``),
    our realized P&L and commissions the broker's fills to the cent, the account flat."""
    rows = {
        r["symbol"]: dict(r)
        for r in await stack.fetch("SELECT * FROM positions WHERE portfolio_id = $1", POS_PORTFOLIO)
    }
    symbols = list(symbols)
    assert sorted(rows) == sorted(symbols), sorted(rows)
    broker_orders = stack.broker_orders(POS_ACCOUNT)
    fills = stack.broker_fills(POS_ACCOUNT)
    for symbol in symbols:
        row = rows[symbol]
        pid = row["id"]
        assert row["status"] == "CLOSED", (pid, row["status"])
        assert row["quantity"] == 0
        assert row["exit_client_order_ids"] == [f"exit:{pid}"], row["exit_client_order_ids"]
        refs = sorted(o.request.order_ref for o in broker_orders if o.symbol == symbol)
        assert refs == sorted([row["entry_client_order_id"], f"exit:{pid}"]), refs
        mine = [f for f in fills if f.execution.symbol == symbol]
        sold = sum(
            (f.execution.shares * f.execution.price for f in mine if f.execution.side == "SLD"),
            Decimal(0),
        )
        bought = sum(
            (f.execution.shares * f.execution.price for f in mine if f.execution.side == "BOT"),
            Decimal(0),
        )
        commissions = sum((f.commission.commission for f in mine), Decimal(0))
        assert row["commissions"] == commissions, (pid, row["commissions"], commissions)
        assert row["realized_pnl"] == sold - bought - commissions, (pid, row["realized_pnl"])
    assert stack.broker_positions(POS_ACCOUNT) == {}
    return [rows[s] for s in symbols]


def position_orders(rows: Iterable[dict[str, Any]]) -> set[str]:
    """The client order ids of these positions' entries and exits."""
    return {
        coid
        for row in rows
        for coid in (row["entry_client_order_id"], *row["exit_client_order_ids"])
    }


class Ticker:
    """A live market for the position symbols: their prices are re-sent every 0.25 s
    (a frozen simulator sends a tick only when a price is set)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.prices = dict.fromkeys(POSITION_SYMBOLS, ENTRY_PRICE)
        self._task: asyncio.Task[None] | None = None

    def move(self, symbol: str, price: Decimal) -> None:
        self.prices[symbol] = price
        self.stack.sim.faults.set_price(symbol, price)

    async def _run(self) -> None:
        while True:
            for symbol, price in self.prices.items():
                self.stack.sim.faults.set_price(symbol, price)
            await asyncio.sleep(0.25)

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
