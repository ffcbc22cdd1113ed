"""Simulated brokerage accounts: cash, positions, P&L, margin and IB account tags.

Money math is Decimal. Position ``avg_cost`` INCLUDES commissions (like IB): buying 100
@ 10.00 with $1 commission gives avg_cost 10.01. Realised P&L of a closing execution is
``shares * (price - avg_cost)`` (long; mirrored for short) minus that execution's
commission, so a round trip realises ``qty * (exit - entry) - all commissions``.
Short positions are allowed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from ibflow_gateway_sim.domain.instruments import Instrument

__all__ = [
    "DEFAULT_ACCOUNT_ID",
    "Account",
    "AccountType",
    "Accounts",
    "MarginCheck",
    "PortfolioItem",
    "Position",
]

DEFAULT_ACCOUNT_ID = "DU1234567"
AccountType = Literal["margin", "cash"]


@dataclass(frozen=True, slots=True)
class Position:
    """A position in one instrument (quantity < 0 = short)."""

    account: str
    instrument: Instrument
    quantity: Decimal
    avg_cost: Decimal
    realized_pnl: Decimal


@dataclass(frozen=True, slots=True)
class PortfolioItem:
    """One updatePortfolio row."""

    account: str
    instrument: Instrument
    con_id: int
    position: Decimal
    market_price: Decimal
    market_value: Decimal
    average_cost: Decimal
    unrealized_pnl: Decimal
    realized_pnl: Decimal


@dataclass(frozen=True, slots=True)
class MarginCheck:
    """Result of a pre-trade buying-power check."""

    ok: bool
    equity_with_loan: Decimal
    required: Decimal


_CENT = Decimal("0.01")


def _money(value: Decimal) -> str:
    return str(value.quantize(_CENT))


def _sign(value: Decimal) -> int:
    return (value > 0) - (value < 0)


class _PositionState:
    __slots__ = ("avg_cost", "instrument", "quantity", "realized")

    def __init__(self, instrument: Instrument) -> None:
        self.instrument = instrument
        self.quantity = Decimal(0)
        self.avg_cost = Decimal(0)
        self.realized = Decimal(0)


class Account:
    """One account.

    ``account_type='margin'``: initial/maintenance margin = ``initial_margin_rate`` /
    ``maint_margin_rate`` of gross position value (25 % each by default), BuyingPower =
    AvailableFunds / initial_margin_rate (4x). ``'cash'``: both rates are forced to 100 %,
    so BuyingPower = AvailableFunds = cash (for long positions).

    Valuation uses the last mark given to :meth:`mark` for each conId (the engine marks
    with the last trade price on every market check and fill); a position never marked
    is valued at its average cost.
    """

    def __init__(
        self,
        account_id: str = DEFAULT_ACCOUNT_ID,
        currency: str = "USD",
        starting_cash: Decimal = Decimal(1_000_000),
        *,
        account_type: AccountType = "margin",
        initial_margin_rate: Decimal = Decimal("0.25"),
        maint_margin_rate: Decimal = Decimal("0.25"),
    ) -> None:
        if account_type == "cash":
            initial_margin_rate = maint_margin_rate = Decimal(1)
        if initial_margin_rate <= 0 or maint_margin_rate <= 0:
            raise ValueError("margin rates must be positive")
        self.account_id = account_id
        self.currency = currency
        self.starting_cash = Decimal(starting_cash)
        self.account_type: AccountType = account_type
        self.initial_margin_rate = initial_margin_rate
        self.maint_margin_rate = maint_margin_rate
        self.cash = Decimal(starting_cash)
        self.realized_pnl = Decimal(0)
        self.commissions = Decimal(0)
        self._positions: dict[int, _PositionState] = {}
        self._marks: dict[int, Decimal] = {}

    # -- updates ---------------------------------------------------------------------

    def mark(self, con_id: int, price: Decimal) -> None:
        """Set the valuation price of ``con_id`` (ignored if not positive)."""
        if price > 0:
            self._marks[con_id] = price

    def apply_execution(
        self,
        instrument: Instrument,
        side: Literal["BOT", "SLD"],
        shares: Decimal,
        price: Decimal,
        commission: Decimal,
    ) -> Decimal | None:
        """Book one execution: cash, position, average cost and realised P&L.

        Returns the P&L realised by this execution (net of its commission share), or
        ``None`` when it only opened/increased a position.
        """
        if shares <= 0:
            raise ValueError("shares must be positive")
        delta = shares if side == "BOT" else -shares
        pos = self._positions.get(instrument.con_id)
        if pos is None:
            pos = self._positions[instrument.con_id] = _PositionState(instrument)
        self.cash -= delta * price + commission
        self.commissions += commission
        qty = pos.quantity
        realized: Decimal | None = None
        if qty == 0 or _sign(qty) == _sign(delta):
            new_qty = qty + delta
            basis = abs(qty) * pos.avg_cost + shares * price + _sign(delta) * commission
            pos.avg_cost = basis / abs(new_qty)
            pos.quantity = new_qty
        else:
            close_qty = min(shares, abs(qty))
            open_qty = shares - close_qty
            close_commission = commission * close_qty / shares
            open_commission = commission - close_commission
            realized = close_qty * (price - pos.avg_cost) * _sign(qty) - close_commission
            pos.quantity = qty + delta
            if pos.quantity == 0:
                pos.avg_cost = Decimal(0)
            elif open_qty > 0:
                pos.avg_cost = (open_qty * price + _sign(delta) * open_commission) / open_qty
            pos.realized += realized
            self.realized_pnl += realized
        self._marks.setdefault(instrument.con_id, price)
        return realized

    # -- queries ---------------------------------------------------------------------

    def _mark_of(self, pos: _PositionState) -> Decimal:
        return self._marks.get(pos.instrument.con_id, pos.avg_cost)

    def position(self, con_id: int) -> Position | None:
        """The position in ``con_id`` (``None`` if never traded)."""
        pos = self._positions.get(con_id)
        if pos is None:
            return None
        return Position(self.account_id, pos.instrument, pos.quantity, pos.avg_cost, pos.realized)

    def positions(self) -> list[Position]:
        """Every position traded in this account (including ones closed back to 0)."""
        return [
            Position(self.account_id, p.instrument, p.quantity, p.avg_cost, p.realized)
            for p in self._positions.values()
        ]

    @property
    def stock_market_value(self) -> Decimal:
        """Net market value of all positions (shorts negative)."""
        return sum((p.quantity * self._mark_of(p) for p in self._positions.values()), Decimal(0))

    @property
    def gross_position_value(self) -> Decimal:
        """Sum of absolute position values."""
        return sum(
            (abs(p.quantity * self._mark_of(p)) for p in self._positions.values()), Decimal(0)
        )

    @property
    def unrealized_pnl(self) -> Decimal:
        """Sum over positions of ``quantity * (mark - avg_cost)``."""
        return sum(
            (p.quantity * (self._mark_of(p) - p.avg_cost) for p in self._positions.values()),
            Decimal(0),
        )

    @property
    def net_liquidation(self) -> Decimal:
        """Cash plus the net market value of positions."""
        return self.cash + self.stock_market_value

    @property
    def equity_with_loan_value(self) -> Decimal:
        """Equal to net liquidation for a stock-only account."""
        return self.net_liquidation

    @property
    def init_margin_req(self) -> Decimal:
        """Initial margin: ``initial_margin_rate`` x gross position value."""
        return self.gross_position_value * self.initial_margin_rate

    @property
    def maint_margin_req(self) -> Decimal:
        """Maintenance margin: ``maint_margin_rate`` x gross position value."""
        return self.gross_position_value * self.maint_margin_rate

    @property
    def available_funds(self) -> Decimal:
        """Equity with loan value minus initial margin."""
        return self.equity_with_loan_value - self.init_margin_req

    @property
    def excess_liquidity(self) -> Decimal:
        """Equity with loan value minus maintenance margin."""
        return self.equity_with_loan_value - self.maint_margin_req

    @property
    def buying_power(self) -> Decimal:
        """AvailableFunds / initial_margin_rate (4x for margin, 1x for cash), never < 0."""
        return max(self.available_funds / self.initial_margin_rate, Decimal(0))

    def check_margin(self, additional_value: Decimal) -> MarginCheck:
        """Can the account take on ``additional_value`` more gross position value?

        Required = initial margin on (gross position value + additional); it must not
        exceed the equity with loan value.
        """
        required = (self.gross_position_value + abs(additional_value)) * self.initial_margin_rate
        elv = self.equity_with_loan_value
        return MarginCheck(ok=required <= elv, equity_with_loan=elv, required=required)

    def account_values(self) -> dict[str, str]:
        """IB account tags → string values (monetary values in ``currency``, 2 decimals).

        ``AccountCode``, ``AccountType`` and ``Currency`` carry no currency on the wire.
        """
        nlv = self.net_liquidation
        gpv = self.gross_position_value
        cushion = self.excess_liquidity / nlv if nlv else Decimal(0)
        leverage = gpv / nlv if nlv else Decimal(0)
        return {
            "AccountCode": self.account_id,
            "AccountType": "INDIVIDUAL",
            "Currency": self.currency,
            "NetLiquidation": _money(nlv),
            "TotalCashValue": _money(self.cash),
            "SettledCash": _money(self.cash),
            "CashBalance": _money(self.cash),
            "AccruedCash": _money(Decimal(0)),
            "BuyingPower": _money(self.buying_power),
            "AvailableFunds": _money(self.available_funds),
            "ExcessLiquidity": _money(self.excess_liquidity),
            "EquityWithLoanValue": _money(self.equity_with_loan_value),
            "GrossPositionValue": _money(gpv),
            "StockMarketValue": _money(self.stock_market_value),
            "InitMarginReq": _money(self.init_margin_req),
            "MaintMarginReq": _money(self.maint_margin_req),
            "FullInitMarginReq": _money(self.init_margin_req),
            "FullMaintMarginReq": _money(self.maint_margin_req),
            "FullAvailableFunds": _money(self.available_funds),
            "FullExcessLiquidity": _money(self.excess_liquidity),
            "RealizedPnL": _money(self.realized_pnl),
            "UnrealizedPnL": _money(self.unrealized_pnl),
            "Cushion": str(cushion.quantize(Decimal("0.000001"))),
            "Leverage-S": str(leverage.quantize(Decimal("0.01"))),
        }

    def portfolio(self) -> list[PortfolioItem]:
        """updatePortfolio rows for every position traded (including closed ones)."""
        items = []
        for p in self._positions.values():
            mark = self._mark_of(p)
            items.append(
                PortfolioItem(
                    account=self.account_id,
                    instrument=p.instrument,
                    con_id=p.instrument.con_id,
                    position=p.quantity,
                    market_price=mark,
                    market_value=p.quantity * mark,
                    average_cost=p.avg_cost,
                    unrealized_pnl=p.quantity * (mark - p.avg_cost),
                    realized_pnl=p.realized,
                )
            )
        return items


class Accounts:
    """Registry of accounts; the first one is the default (used when an order names none)."""

    def __init__(self, accounts: Iterable[Account] | None = None) -> None:
        self._accounts: dict[str, Account] = {}
        for account in accounts if accounts is not None else [Account()]:
            self.add(account)
        if not self._accounts:
            raise ValueError("at least one account is required")

    def add(self, account: Account) -> None:
        """Register another account (ids must be unique)."""
        if account.account_id in self._accounts:
            raise ValueError(f"duplicate account {account.account_id}")
        self._accounts[account.account_id] = account

    @property
    def default(self) -> Account:
        """The first account."""
        return next(iter(self._accounts.values()))

    def get(self, account_id: str) -> Account | None:
        """The account with ``account_id``; an empty id means the default account."""
        if not account_id:
            return self.default
        return self._accounts.get(account_id)

    @property
    def ids(self) -> list[str]:
        """All account ids (managedAccounts), default first."""
        return list(self._accounts)

    def __iter__(self) -> Iterator[Account]:
        return iter(self._accounts.values())

    def __len__(self) -> int:
        return len(self._accounts)
