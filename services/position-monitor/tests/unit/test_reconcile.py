"""Our book against the broker's holdings: drift kinds, unknown snapshots, adoption."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest

from ibflow.contracts.enums import ExitReason, PositionSide
from ibflow.contracts.enums import PositionStatus as S
from ibflow_position_monitor.domain import (
    UNKNOWN,
    AdoptExternal,
    Book,
    Drift,
    DriftKind,
    Holding,
    PositionState,
    book_of,
    external_position_id,
    is_valid_id,
    reconcile,
)

D = Decimal
TODAY = dt.date(2025, 3, 10)
SNAPSHOT = uuid.UUID("0b8f7c1e-3a52-4d6e-9f0a-1234567890ab")


def held(
    symbol: str,
    quantity: str,
    *,
    side: PositionSide = PositionSide.LONG,
    portfolio: str = "alpha",
    planned: str | None = None,
) -> PositionState:
    state = PositionState.new(
        position_id=f"pos-{portfolio}-20250310-{symbol}",
        portfolio_id=portfolio,
        symbol=symbol,
        side=side,
        planned_quantity=D(planned or quantity if D(quantity) > 0 else "10"),
        entry_client_order_id=f"entry-{portfolio}-20250310-{symbol}",
    )
    if D(quantity) > 0:
        state = state.on_execution(
            "e-" + symbol,
            client_order_id=state.entry_client_order_id,
            side=state.entry_side,
            shares=D(quantity),
            price=D("10"),
        ).state
    return state


def compare(book: dict[str, str], broker: dict[str, str]) -> tuple[Drift, ...]:
    result = reconcile(
        {s: D(q) for s, q in book.items()},
        {s: D(q) for s, q in broker.items()},
        portfolio_id="alpha",
        session_date=TODAY,
    )
    assert result.complete
    return result.drifts


def test_in_sync_book_has_no_drift() -> None:
    result = reconcile(
        {"AAPL": D(100), "MSFT": D(-25)},
        {"AAPL": D("100.0"), "MSFT": D(-25), "IBM": D(0)},
        portfolio_id="alpha",
        session_date=TODAY,
    )
    assert result.in_sync
    assert result.holdings == (
        Holding("AAPL", D(100), D(100)),
        Holding("MSFT", D(-25), D(-25)),
    )
    assert all(h.difference == 0 for h in result.holdings)


@pytest.mark.parametrize(
    ("ours", "broker", "kind", "difference"),
    [
        ("100", None, DriftKind.MISSING_AT_BROKER, "-100"),
        ("100", "0", DriftKind.MISSING_AT_BROKER, "-100"),  # IB's zero row after a close
        ("-25", None, DriftKind.MISSING_AT_BROKER, "25"),
        (None, "50", DriftKind.UNKNOWN_TO_US, "50"),
        (None, "-50", DriftKind.UNKNOWN_TO_US, "-50"),
        ("100", "60", DriftKind.QUANTITY_MISMATCH, "-40"),
        ("100", "-100", DriftKind.QUANTITY_MISMATCH, "-200"),  # long here, short there
    ],
)
def test_every_difference_is_a_drift_row_of_its_kind(
    ours: str | None, broker: str | None, kind: DriftKind, difference: str
) -> None:
    drifts = compare(
        {} if ours is None else {"AAPL": ours}, {} if broker is None else {"AAPL": broker}
    )
    assert len(drifts) == 1
    drift = drifts[0]
    assert (drift.symbol, drift.kind, drift.difference) == ("AAPL", kind, D(difference))
    assert drift.ours == D(ours or 0)
    assert drift.broker == D(broker or 0)


def test_unknown_broker_snapshot_is_not_flat() -> None:
    book = book_of("alpha", [held("AAPL", "100"), held("MSFT", "25", side=PositionSide.SHORT)])
    result = reconcile(book, UNKNOWN, session_date=TODAY, snapshot_id=SNAPSHOT)
    assert not result.complete
    assert not result.in_sync
    assert result.drifts == ()  # nothing is "missing at the broker"
    assert result.adoptions == ()
    assert result.holdings == (
        Holding("AAPL", D(100), None),
        Holding("MSFT", D(-25), None),
    )
    assert all(h.difference is None for h in result.holdings)


def test_an_empty_known_snapshot_is_flat() -> None:
    result = reconcile(book_of("alpha", [held("AAPL", "100")]), {}, session_date=TODAY)
    assert [d.kind for d in result.drifts] == [DriftKind.MISSING_AT_BROKER]
    assert result.adoptions == ()  # what we hold and the broker doesn't is reported only


def test_positions_unknown_to_us_are_adopted_as_external() -> None:
    result = reconcile(
        Book("alpha", {"AAPL": D(100)}),
        {"AAPL": D(100), "MSFT": D(-30), "BRK B": D(2)},
        session_date=TODAY,
        snapshot_id=SNAPSHOT,
    )
    assert [(d.symbol, d.kind) for d in result.drifts] == [
        ("BRK B", DriftKind.UNKNOWN_TO_US),
        ("MSFT", DriftKind.UNKNOWN_TO_US),
    ]
    assert [a.symbol for a in result.adoptions] == ["BRK B", "MSFT"]
    msft = result.adoptions[1]
    assert msft == AdoptExternal(
        "alpha", "MSFT", D(-30), external_position_id("alpha", TODAY, "MSFT", SNAPSHOT)
    )
    assert msft.position_id == "ext-alpha-20250310-MSFT-0b8f7c1e"
    assert (msft.side, msft.quantity) == (PositionSide.SHORT, D(30))
    assert is_valid_id(result.adoptions[0].position_id)  # "BRK B" has a space

    # Adopted, the position is in our book and the next comparison is clean.
    adopted = PositionState.adopted(
        position_id=msft.position_id,
        portfolio_id="alpha",
        symbol="MSFT",
        side=msft.side,
        quantity=msft.quantity,
        price=D("410.10"),
    )
    book = book_of("alpha", [held("AAPL", "100"), adopted])
    assert reconcile(book, {"AAPL": D(100), "MSFT": D(-30)}, session_date=TODAY).in_sync


def test_the_same_snapshot_names_the_same_adoption_on_every_replica() -> None:
    first = reconcile(
        {}, {"MSFT": D(5)}, portfolio_id="alpha", session_date=TODAY, snapshot_id=SNAPSHOT
    )
    second = reconcile(
        {}, {"MSFT": D(5)}, portfolio_id="alpha", session_date=TODAY, snapshot_id=SNAPSHOT
    )
    assert first == second
    other = reconcile(
        {}, {"MSFT": D(5)}, portfolio_id="alpha", session_date=TODAY, snapshot_id=uuid.uuid4()
    )
    assert other.adoptions[0].position_id != first.adoptions[0].position_id


def test_settling_symbol_is_reported_but_not_adopted() -> None:
    # Our entry works (nothing booked yet) while the broker already shows the fill.
    pending = held("AAPL", "0", planned="100")
    assert pending.status is S.PENDING
    book = book_of("alpha", [pending])
    assert book.settling == {"AAPL"}
    result = reconcile(book, {"AAPL": D(100)}, session_date=TODAY)
    assert result.drifts == (Drift("AAPL", D(0), D(100), DriftKind.UNKNOWN_TO_US, settling=True),)
    assert result.adoptions == ()


def test_book_of_counts_open_and_closing_positions_of_the_portfolio_only() -> None:
    closing = held("MSFT", "25").submit_exit("exit:pos-alpha-20250310-MSFT", ExitReason.STOP).state
    closed = closing.on_execution(
        "x1",
        client_order_id="exit:pos-alpha-20250310-MSFT",
        side=closing.exit_side,
        shares=D(25),
        price=D(11),
    ).state
    cancelled = held("IBM", "0").entry_ended().state
    positions = [
        held("AAPL", "60"),
        held("AAPL", "40", side=PositionSide.SHORT),  # nets against the long
        closing,
        held("TSLA", "10", planned="30"),  # partly filled, entry working: settling
        cancelled,
        held("NVDA", "5", portfolio="beta"),
    ]
    book = book_of("alpha", positions)
    assert dict(book.quantities) == {"AAPL": D(20), "MSFT": D(25), "TSLA": D(10)}
    assert book.settling == {"TSLA"}
    assert book_of("alpha", [closed]).quantities == {}


def test_non_finite_quantities_are_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        reconcile({}, {"AAPL": D("NaN")}, portfolio_id="alpha", session_date=TODAY)
    with pytest.raises(ValueError, match="portfolio_id is required"):
        reconcile({}, {}, session_date=TODAY)
