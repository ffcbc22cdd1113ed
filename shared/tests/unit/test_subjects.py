"""Subjects: builders, wildcards, and where every catalogued subject travels."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from pydantic import TypeAdapter, ValidationError

from ibflow.bus import subjects as s
from ibflow.contracts import PortfolioId
from ibflow.contracts.registry import CATALOGUE, MessageSpec

PORTFOLIO_BUILDERS: list[Callable[[str], str]] = [
    s.gateway_connection,
    s.broker_error,
    s.broker_snapshot,
    s.order_status,
    s.execution,
    s.commission,
    s.order_updated,
    s.order_rejected,
    s.broker_position,
    s.account_values,
    s.portfolio_changed,
    s.trading_halted,
    s.trading_resumed,
    s.risk_breached,
    s.position_changed,
    s.reconciliation,
    s.place_broker_order,
    s.modify_broker_order,
    s.cancel_broker_order,
    s.refresh_broker_state,
]
TOKEN_BUILDERS = [*PORTFOLIO_BUILDERS, s.session_event, s.dead_letter, s.portfolio_events]
ROUTED = [spec for spec in CATALOGUE if spec.subject is not None]


def _name(spec: MessageSpec) -> str:
    return spec.name


def _concrete(spec: MessageSpec) -> str:
    assert spec.subject is not None
    return re.sub(r"\{[a-z_]+\}", "x1", spec.subject)


def test_builders_spell_the_agreed_subjects() -> None:
    assert s.order_status("demo") == "ibflow.evt.v1.order.status.demo"
    assert s.execution("demo") == "ibflow.evt.v1.order.execution.demo"
    assert s.gateway_connection("demo") == "ibflow.evt.v1.gateway.connection.demo"
    assert s.session_event("morning_entry") == "ibflow.evt.v1.session.morning_entry"
    assert s.place_broker_order("demo") == "ibflow.cmd.v1.broker.order.place.demo"
    assert s.dead_letter("order-manager") == "ibflow.dlq.v1.order-manager"
    assert s.SUBMIT_ORDER == "ibflow.cmd.v1.order.submit"
    assert s.ALL_STREAMS == (s.EVENTS_STREAM, s.DEAD_LETTER_STREAM)


@pytest.mark.parametrize("builder", TOKEN_BUILDERS, ids=lambda b: b.__name__)
@pytest.mark.parametrize("bad", ["", "de.mo", "*", ">", "de mo", "demo\n"])
def test_builders_refuse_what_is_not_one_token(builder: Callable[[str], str], bad: str) -> None:
    with pytest.raises(ValueError, match="not a valid subject token"):
        builder(bad)


@pytest.mark.parametrize(
    ("symbol", "subject"),
    [
        ("AAPL", "ibflow.md.v1.AAPL"),
        ("BRK.B", "ibflow.md.v1.BRK_B"),
        ("BRK B", "ibflow.md.v1.BRK_B"),
    ],
)
def test_symbols_become_one_token(symbol: str, subject: str) -> None:
    assert s.market_data(symbol) == subject


@pytest.mark.parametrize("bad", ["", " ", "A*", "A>"])
def test_unusable_symbols_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a valid subject token"):
        s.market_data(bad)


def test_a_halt_of_every_portfolio_has_its_own_scope_no_portfolio_can_take() -> None:
    assert s.trading_halted(None) == f"ibflow.evt.v1.trading.halted.{s.ALL_PORTFOLIOS}"
    assert s.trading_resumed("demo") == "ibflow.evt.v1.trading.resumed.demo"
    with pytest.raises(ValidationError):
        TypeAdapter(PortfolioId).validate_python(s.ALL_PORTFOLIOS)


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("a.b.c", "a.b.c", True),
        ("a.*.c", "a.b.c", True),
        ("a.*", "a.b.c", False),
        ("a.>", "a.b.c", True),
        ("a.>", "a", False),
        ("a.b.c", "a.b", False),
        ("a.b", "a.b.c", False),
        ("a.*.c", "a.b.d", False),
    ],
)
def test_matching_follows_nats_wildcards(pattern: str, subject: str, expected: bool) -> None:
    assert s.matches(pattern, subject) is expected


def test_portfolio_wildcards_select_one_portfolio() -> None:
    mine = s.portfolio_events("demo")
    assert s.matches(mine, s.order_status("demo"))
    assert s.matches(mine, s.position_changed("demo"))
    assert not s.matches(mine, s.order_status("other"))
    assert not s.matches(mine, s.session_event("demo"))
    assert not s.matches(mine, s.trading_halted(None))
    assert s.matches(s.portfolio_events(s.ALL_PORTFOLIOS), s.trading_halted(None))
    assert s.matches(s.wildcard(s.ORDER_STATUS), s.order_status("other"))
    bridge = s.broker_commands("demo")
    assert s.matches(bridge, s.place_broker_order("demo"))
    assert s.matches(bridge, s.refresh_broker_state("demo"))
    assert not s.matches(bridge, s.place_broker_order("other"))
    assert not s.matches(bridge, s.SUBMIT_ORDER)


@pytest.mark.parametrize("spec", ROUTED, ids=_name)
def test_each_subject_is_captured_by_its_stream_only_or_stays_on_core_nats(
    spec: MessageSpec,
) -> None:
    subject = _concrete(spec)
    capturing = [
        stream.name
        for stream in s.ALL_STREAMS
        if any(s.matches(pattern, subject) for pattern in stream.subjects)
    ]
    assert capturing == ([spec.stream.name] if spec.stream else [])


@pytest.mark.parametrize("spec", ROUTED, ids=_name)
def test_one_subject_carries_one_message_type(spec: MessageSpec) -> None:
    subject = _concrete(spec)
    selecting = [
        other.name for other in ROUTED if other.filter and s.matches(other.filter, subject)
    ]
    assert selecting == [spec.name]


@pytest.mark.parametrize("spec", ROUTED, ids=_name)
def test_every_subject_is_versioned_under_the_root(spec: MessageSpec) -> None:
    assert re.match(rf"^{s.ROOT}\.(evt|cmd|md|dlq)\.{s.VERSION}\.", _concrete(spec))
