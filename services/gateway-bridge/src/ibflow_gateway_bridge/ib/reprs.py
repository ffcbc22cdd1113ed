"""Compact ``repr`` for the ib_async objects its wrapper logs on every message.

ib_async's ``Wrapper`` formats whole objects into INFO-level f-strings on every
``orderStatus``, ``openOrder``, ``execDetails``, ``commissionReport``, ``position`` and
``updatePortfolio`` message (``self._logger.info(f"orderStatus: {trade}")``), whatever
the log level: the string is built before ``logging`` can drop it. The default
dataclass ``repr`` of a :class:`~ib_async.Trade` walks its contract, its order (about
150 fields, compared one by one with their defaults), every fill and every log entry,
so it grows with each partial fill of the order. Measured in ``make bench``'s burst
(500 orders x 20 partial fills): 15-25 % of the bridge's CPU went to building strings
nobody reads.

:func:`install` replaces those ``repr`` with one line naming what identifies the
object (ids, symbol, status, quantities), which is also what a log reader needs. It is
called once when :mod:`ibflow_gateway_bridge.ib.adapter` is imported; the bridge is
the only process that imports ib_async.
"""

from __future__ import annotations

from typing import Any, Final

from ib_async import CommissionReport, Execution, Fill, PortfolioItem, Position, Trade

__all__ = ["install"]


def _trade(self: Trade) -> str:
    order, status = self.order, self.orderStatus
    return (
        f"Trade(orderId={order.orderId}, permId={order.permId}, clientId={order.clientId},"
        f" orderRef={order.orderRef!r}, {order.action} {order.totalQuantity}"
        f" {self.contract.symbol} {order.orderType}, status={status.status!r},"
        f" filled={status.filled}, remaining={status.remaining}, fills={len(self.fills)})"
    )


def _execution(self: Execution) -> str:
    return (
        f"Execution(execId={self.execId!r}, permId={self.permId}, orderId={self.orderId},"
        f" orderRef={self.orderRef!r}, {self.side} {self.shares} @ {self.price},"
        f" cumQty={self.cumQty}, acct={self.acctNumber!r})"
    )


def _commission(self: CommissionReport) -> str:
    return (
        f"CommissionReport(execId={self.execId!r}, commission={self.commission}"
        f" {self.currency}, realizedPNL={self.realizedPNL})"
    )


def _fill(self: Fill) -> str:
    return f"Fill({self.contract.symbol}, {self.execution!r}, {self.commissionReport!r})"


def _position(self: Position) -> str:
    return (
        f"Position(account={self.account!r}, {self.contract.symbol}"
        f" conId={self.contract.conId}, position={self.position}, avgCost={self.avgCost})"
    )


def _portfolio_item(self: PortfolioItem) -> str:
    return (
        f"PortfolioItem(account={self.account!r}, {self.contract.symbol}"
        f" conId={self.contract.conId}, position={self.position},"
        f" marketPrice={self.marketPrice}, unrealizedPNL={self.unrealizedPNL})"
    )


_REPRS: Final[dict[type[Any], Any]] = {
    Trade: _trade,
    Execution: _execution,
    CommissionReport: _commission,
    Fill: _fill,
    Position: _position,
    PortfolioItem: _portfolio_item,
}


def install() -> None:
    """Give the logged ib_async classes their compact ``repr`` (idempotent)."""
    for cls, compact in _REPRS.items():
        cls.__repr__ = compact
