"""What a batch of the bridge's order facts changes, gathered in memory before it is
written in one transaction by :meth:`~ibflow_order_manager.book.OrderBook.on_facts`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal

from ibflow.contracts import CommissionReported, ExecutionReported, OrderStatus, OrderStatusChanged
from ibflow_order_manager import repository as repo
from ibflow_order_manager.domain import OrderState, Transition

BrokerFact = OrderStatusChanged | ExecutionReported | CommissionReported
"""An event of the bridge about one of our (or an external) order."""

ReservationRule = Callable[[repo.Order, OrderState], Decimal]
"""``(order before the batch, its state after) -> its reserved cash after``."""


@dataclass(slots=True)
class _Tracked:
    before: repo.Order
    order: repo.Order
    entered: list[OrderStatus] = field(default_factory=list)
    cash: Decimal = Decimal(0)


@dataclass(slots=True)
class FactBatch:
    """The orders a batch touches (locked), the executions it books, the commissions it
    records or parks, and the cash it moves per order."""

    booked: dict[str, repo.BookedExecution]
    parked: dict[str, repo.ParkedCommission]
    """Commissions that were parked for this batch's executions (taken out of the table)."""
    orders: dict[str, _Tracked] = field(default_factory=dict)
    fills: dict[str, repo.NewExecution] = field(default_factory=dict)
    commissions: list[tuple[str, Decimal, str, Decimal | None]] = field(default_factory=list)
    parks: dict[str, repo.ParkedCommission] = field(default_factory=dict)
    fill_times: list[datetime] = field(default_factory=list)

    def track(self, order: repo.Order) -> repo.Order:
        """Follow ``order`` (as locked in this transaction); returns the current version."""
        tracked = self.orders.setdefault(order.client_order_id, _Tracked(order, order))
        return tracked.order

    def current(self, client_order_id: str | None, perm_id: int | None) -> repo.Order | None:
        """The batch's current version of an order it follows, by our id or IB's permId."""
        if client_order_id and client_order_id in self.orders:
            return self.orders[client_order_id].order
        if perm_id:
            for tracked in self.orders.values():
                if tracked.order.perm_id == perm_id:
                    return tracked.order
        return None

    def apply(
        self,
        order: repo.Order,
        transition: Transition,
        *,
        cash: Decimal = Decimal(0),
        commission: Decimal = Decimal(0),
        ib_order_id: int | None = None,
        perm_id: int | None = None,
    ) -> None:
        """Record ``transition`` of ``order`` with the cash it moves and the commission
        it adds."""
        tracked = self.orders[order.client_order_id]
        if transition.entered is not None:
            tracked.entered.append(transition.entered)
        tracked.cash += cash
        tracked.order = replace(
            tracked.order,
            state=transition.state,
            commission=tracked.order.commission + commission,
            ib_order_id=ib_order_id or tracked.order.ib_order_id,
            perm_id=perm_id or tracked.order.perm_id,
        )

    def book(self, fill: repo.NewExecution, ts_init: datetime) -> None:
        """An execution to insert (and, from now on, booked for later facts)."""
        self.fills[fill.exec_id] = fill
        self.booked[fill.exec_id] = repo.BookedExecution(
            fill.exec_id, fill.order.client_order_id, fill.commission is not None
        )
        self.fill_times.append(ts_init)

    def record_commission(self, event: CommissionReported) -> str | None:
        """Attach a commission to its booked execution; returns the order's id, or
        ``None`` when it is a replay or its execution is not booked (then parked)."""
        booked = self.booked.get(event.exec_id)
        if booked is None:
            self.parks.setdefault(
                event.exec_id,
                (
                    event.exec_id,
                    event.portfolio_id,
                    event.commission,
                    event.currency,
                    event.realized_pnl,
                ),
            )
            return None
        if booked.commission_known:
            return None
        booked.commission_known = True
        fill = self.fills.get(event.exec_id)
        if fill is not None:
            fill.commission = (event.commission, event.currency, event.realized_pnl)
        else:
            self.commissions.append(
                (event.exec_id, event.commission, event.currency, event.realized_pnl)
            )
        return booked.client_order_id

    def take_parked(self, exec_id: str) -> tuple[Decimal, str, Decimal | None] | None:
        """The commission parked for ``exec_id`` as ``(amount, currency, realized P&L)``,
        now attached to its execution."""
        parked = self.parked.pop(exec_id, None)
        return None if parked is None else (parked[2], parked[3], parked[4])

    def booked_commissions(self) -> list[tuple[str, str, Decimal]]:
        """``(portfolio_id, currency, amount)`` of every commission the batch books: with
        its new execution, or onto an execution booked before (not those it parks)."""
        out = [
            (fill.order.portfolio_id, fill.commission[1], fill.commission[0])
            for fill in self.fills.values()
            if fill.commission is not None
        ]
        for exec_id, amount, currency, _ in self.commissions:
            order = self.orders[self.booked[exec_id].client_order_id].before
            out.append((order.portfolio_id, currency, amount))
        return out

    def still_parked(self) -> list[repo.ParkedCommission]:
        """Commissions to keep parked: new ones, and those taken out for an execution
        that was not booked after all."""
        return [*self.parks.values(), *(p for p in self.parked.values() if p[0] not in self.parks)]

    def changes(self, reservation: ReservationRule) -> list[repo.OrderChange]:
        """Every order whose facts, money or ids changed, sorted by id."""
        out: list[repo.OrderChange] = []
        for coid in sorted(self.orders):
            tracked = self.orders[coid]
            before, after = tracked.before, tracked.order
            if after == before:
                continue
            out.append(
                repo.OrderChange(
                    before=before,
                    state=after.state,
                    entered=tuple(tracked.entered),
                    reserved_cash=reservation(before, after.state),
                    commission=after.commission,
                    ib_order_id=after.ib_order_id,
                    perm_id=after.perm_id,
                )
            )
        return out

    def cash_by_portfolio(self) -> dict[str, Decimal]:
        """Cash moved per portfolio (fills and commissions)."""
        moved: dict[str, Decimal] = {}
        for tracked in self.orders.values():
            pid = tracked.before.portfolio_id
            moved[pid] = moved.get(pid, Decimal(0)) + tracked.cash
        return moved
