"""Our book against the broker's holdings, per portfolio and symbol (failure mode 12).

IB is the truth for *quantity*: this module only compares and reports; it never
corrects our book from the broker's figures. It is a pure diff:

* **our book**: per symbol, the signed quantity (LONG > 0, SHORT < 0) held by the
  portfolio's ``OPEN`` and ``CLOSING`` positions (:func:`book_of`);
* **the broker's**: per symbol, the signed quantity of a broker snapshot
  (``BrokerPositionReported``, summed per symbol by the caller), or :data:`UNKNOWN`
  when the snapshot's positions query failed.

Rules:

* **Unknown is not flat.** With :data:`UNKNOWN` nothing is concluded: every symbol of
  our book is listed with the broker's quantity ``None``, there are no drift rows and
  no adoptions, and :attr:`Reconciliation.in_sync` is false. A symbol absent from a
  *known* snapshot is flat (IB lists only holdings, and zero rows after an intraday
  close; both read as 0).
* **Every difference is a row** (:class:`Drift`): ``missing_at_broker`` (we hold it,
  the broker is flat), ``unknown_to_us`` (the broker holds it, we are flat) or
  ``quantity_mismatch`` (both hold it, in different quantities or directions). The
  difference is broker minus ours, as in the contracts' ``ReconciliationItem.drift``.
* **Unknown to us is adopted, never ignored**: each ``unknown_to_us`` row comes with an
  :class:`AdoptExternal` decision (``PositionState.adopted`` builds the position), except
  where the symbol is *settling*: we have a position there whose entry still works or
  whose reported fills are not booked yet, so the broker's holding is most likely our
  own fill in flight. Such rows are reported with ``settling=True`` and adopted by a
  later reconciliation if they persist. Mismatches are reported, not adopted: which
  part of a quantity is "ours" is for an operator to say.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum, StrEnum
from typing import Final, Literal, TypeAlias

from ibflow.contracts.enums import PositionSide, PositionStatus
from ibflow_position_monitor.domain.ids import external_position_id
from ibflow_position_monitor.domain.position import PositionState

__all__ = [
    "UNKNOWN",
    "AdoptExternal",
    "Book",
    "BrokerHoldings",
    "Drift",
    "DriftKind",
    "Holding",
    "Reconciliation",
    "Unknown",
    "book_of",
    "reconcile",
]

_ZERO: Final = Decimal(0)

_HELD_STATUSES: Final = frozenset({PositionStatus.OPEN, PositionStatus.CLOSING})


class Unknown(Enum):
    """The broker's holdings could not be established (the positions query failed)."""

    UNKNOWN = "unknown"


UNKNOWN: Final = Unknown.UNKNOWN
"""Pass as the broker's holdings when the snapshot's positions query failed."""

BrokerHoldings: TypeAlias = Mapping[str, Decimal] | Literal[Unknown.UNKNOWN]
"""Symbol → signed quantity at the broker, or :data:`UNKNOWN`."""


class DriftKind(StrEnum):
    """How our book and the broker's differ in one symbol."""

    MISSING_AT_BROKER = "missing_at_broker"
    UNKNOWN_TO_US = "unknown_to_us"
    QUANTITY_MISMATCH = "quantity_mismatch"


@dataclass(frozen=True, slots=True)
class Book:
    """Our side of the comparison for one portfolio (see :func:`book_of`)."""

    portfolio_id: str
    quantities: Mapping[str, Decimal] = field(default_factory=dict)
    """Symbol → signed quantity of the OPEN / CLOSING positions (zero sums omitted)."""
    settling: frozenset[str] = frozenset()
    """Symbols with a position whose entry still works or whose fills are in flight."""


@dataclass(frozen=True, slots=True)
class Holding:
    """One symbol as we and the broker hold it (signed); ``broker`` ``None``: unknown."""

    symbol: str
    ours: Decimal
    broker: Decimal | None

    @property
    def difference(self) -> Decimal | None:
        """Broker minus ours; ``None`` when the broker's holding is unknown."""
        return None if self.broker is None else self.broker - self.ours


@dataclass(frozen=True, slots=True)
class Drift:
    """A difference in one symbol (a ``reconciliation_reports`` row)."""

    symbol: str
    ours: Decimal
    broker: Decimal
    kind: DriftKind
    settling: bool = False
    """We have a position in the symbol whose fills may still be in flight."""

    @property
    def difference(self) -> Decimal:
        """Broker minus ours (never 0)."""
        return self.broker - self.ours


@dataclass(frozen=True, slots=True)
class AdoptExternal:
    """Adopt the broker's holding of ``symbol`` as an external position."""

    portfolio_id: str
    symbol: str
    broker_quantity: Decimal
    """Signed, as the broker reports it."""
    position_id: str
    """Deterministic (:func:`~ibflow_position_monitor.domain.ids.external_position_id`)."""

    @property
    def side(self) -> PositionSide:
        """LONG for a positive holding, SHORT for a negative one."""
        return PositionSide.LONG if self.broker_quantity > 0 else PositionSide.SHORT

    @property
    def quantity(self) -> Decimal:
        """The holding's size (positive)."""
        return abs(self.broker_quantity)


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """The comparison of one portfolio's book with one broker snapshot."""

    portfolio_id: str
    complete: bool
    """False when the broker's holdings were unknown: nothing was concluded."""
    holdings: tuple[Holding, ...]
    """Every symbol held by us or by the broker, by symbol."""
    drifts: tuple[Drift, ...]
    """Every symbol that differs, by symbol (empty when not complete)."""
    adoptions: tuple[AdoptExternal, ...]
    snapshot_id: uuid.UUID | None = None

    @property
    def in_sync(self) -> bool:
        """Complete, and no symbol differs."""
        return self.complete and not self.drifts


def _check_quantity(symbol: str, quantity: Decimal, whose: str) -> None:
    if not quantity.is_finite():
        raise ValueError(f"{whose} quantity of {symbol} must be a finite number, got {quantity}")


def book_of(portfolio_id: str, positions: Iterable[PositionState]) -> Book:
    """Our book of ``portfolio_id`` from its positions (others' are skipped): the signed
    quantities held by OPEN and CLOSING positions, and the settling symbols."""
    quantities: dict[str, Decimal] = {}
    settling: set[str] = set()
    for position in positions:
        if position.portfolio_id != portfolio_id:
            continue
        if position.entry_working or position.awaiting_entry_fills > 0:
            settling.add(position.symbol)
        if position.status in _HELD_STATUSES:
            total = quantities.get(position.symbol, _ZERO) + position.signed_quantity
            quantities[position.symbol] = total
    return Book(
        portfolio_id=portfolio_id,
        quantities={symbol: qty for symbol, qty in quantities.items() if qty != 0},
        settling=frozenset(settling),
    )


def _kind(ours: Decimal, broker: Decimal) -> DriftKind:
    if broker == 0:
        return DriftKind.MISSING_AT_BROKER
    if ours == 0:
        return DriftKind.UNKNOWN_TO_US
    return DriftKind.QUANTITY_MISMATCH


def reconcile(
    book: Book | Mapping[str, Decimal],
    broker: BrokerHoldings,
    *,
    portfolio_id: str | None = None,
    session_date: dt.date,
    snapshot_id: uuid.UUID | None = None,
    settling: Collection[str] = (),
) -> Reconciliation:
    """Compare ``book`` (a :class:`Book`, or symbol → signed quantity with
    ``portfolio_id`` given) with ``broker``'s holdings (module docstring).

    ``session_date`` and ``snapshot_id`` name adopted positions
    (:func:`~ibflow_position_monitor.domain.ids.external_position_id`); ``settling``
    adds to the book's settling symbols.
    """
    if isinstance(book, Book):
        if portfolio_id is not None and portfolio_id != book.portfolio_id:
            raise ValueError(f"book is {book.portfolio_id}'s, not {portfolio_id}'s")
        portfolio_id = book.portfolio_id
        ours_by_symbol = book.quantities
        unsettled = book.settling | frozenset(settling)
    else:
        if portfolio_id is None:
            raise ValueError("portfolio_id is required with a plain mapping as the book")
        ours_by_symbol = book
        unsettled = frozenset(settling)
    for symbol, quantity in ours_by_symbol.items():
        _check_quantity(symbol, quantity, "our")

    if broker is UNKNOWN:
        holdings = tuple(
            Holding(symbol, ours, None)
            for symbol, ours in sorted(ours_by_symbol.items())
            if ours != 0
        )
        return Reconciliation(portfolio_id, False, holdings, (), (), snapshot_id)

    for symbol, quantity in broker.items():
        _check_quantity(symbol, quantity, "the broker's")
    symbols = sorted(
        {s for s, q in ours_by_symbol.items() if q != 0} | {s for s, q in broker.items() if q != 0}
    )
    holdings_list: list[Holding] = []
    drifts: list[Drift] = []
    adoptions: list[AdoptExternal] = []
    for symbol in symbols:
        ours = ours_by_symbol.get(symbol, _ZERO)
        theirs = broker.get(symbol, _ZERO)
        holdings_list.append(Holding(symbol, ours, theirs))
        if ours == theirs:
            continue
        kind = _kind(ours, theirs)
        is_settling = symbol in unsettled
        drifts.append(Drift(symbol, ours, theirs, kind, settling=is_settling))
        if kind is DriftKind.UNKNOWN_TO_US and not is_settling:
            position_id = external_position_id(portfolio_id, session_date, symbol, snapshot_id)
            adoptions.append(AdoptExternal(portfolio_id, symbol, theirs, position_id))
    return Reconciliation(
        portfolio_id, True, tuple(holdings_list), tuple(drifts), tuple(adoptions), snapshot_id
    )
