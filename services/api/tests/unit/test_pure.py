"""Pure pieces of the api: key format and scopes, cursors, error shapes, estimates,
settings, WebSocket client filters and backpressure."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal

import pytest

from ibflow.bus.errors import RemoteError, RequestTimeout
from ibflow.settings import SettingsError
from ibflow_api.errors import ApiError, validation_detail
from ibflow_api.keys import Scope, parse_key
from ibflow_api.repository import decode_cursor, encode_cursor
from ibflow_api.routes.ib import estimated_commission
from ibflow_api.settings import ApiSettings
from ibflow_api.ws import WsClient


def test_scopes_are_ordered_read_trade_admin() -> None:
    assert Scope.ADMIN.allows(Scope.TRADE)
    assert Scope.ADMIN.allows(Scope.READ)
    assert Scope.TRADE.allows(Scope.READ)
    assert not Scope.TRADE.allows(Scope.ADMIN)
    assert not Scope.READ.allows(Scope.TRADE)


def test_only_well_formed_keys_parse() -> None:
    secret = "a" * 43
    assert parse_key(f"ibf_0123456789ab_{secret}") == ("0123456789ab", secret)
    assert parse_key(f" ibf_0123456789ab_{secret}\n") == ("0123456789ab", secret)
    assert parse_key(f"ibf_0123456789AB_{secret}") is None  # id is lower-case hex
    assert parse_key(f"ibf_0123456789ab_{secret[:-1]}") is None
    assert parse_key("Bearer whatever") is None


def test_cursor_round_trips_and_garbage_is_a_422_naming_cursor() -> None:
    when = dt.datetime(2026, 11, 21, 15, 30, 1, 123456, tzinfo=dt.UTC)
    assert decode_cursor(encode_cursor(when, "coid-1")) == (when, "coid-1")
    assert decode_cursor(encode_cursor(when, 42)) == (when, 42)
    for bad in ("nope", encode_cursor(when, "x")[:-3], "W10"):
        with pytest.raises(ApiError) as caught:
            decode_cursor(bad)
        assert caught.value.status == 422
        assert caught.value.message.startswith("cursor:")


def test_refusal_messages_name_their_field_in_422_details() -> None:
    assert validation_detail("symbol: XYZ is not a known, enabled instrument") == [
        {"loc": ["body", "symbol"], "msg": "XYZ is not a known, enabled instrument",
         "type": "invalid_request"},
    ]  # fmt: skip
    assert validation_detail("nothing to modify")[0]["loc"] == ["body"]


def test_command_errors_map_to_statuses() -> None:
    assert ApiError.from_command(RemoteError("refused", "halted"), "s").status == 409
    assert ApiError.from_command(RemoteError("not_ready", "x"), "s").status == 503
    assert ApiError.from_command(RemoteError("invalid_request", "x"), "s").status == 422
    assert ApiError.from_command(RemoteError("not_found", "x"), "s").status == 404
    timeout = ApiError.from_command(RequestTimeout("no reply"), "ibflow.cmd.v1.order.submit")
    assert timeout.status == 504
    assert "outcome is unknown" in timeout.message
    assert ApiError.from_command(RemoteError("something_new", "x"), "s").status == 502


def test_commission_estimate_follows_ib_fixed_rate_bounds() -> None:
    assert estimated_commission(Decimal(100), Decimal(50)) == Decimal("1.00")  # minimum
    assert estimated_commission(Decimal(1000), Decimal(50)) == Decimal("5.00")
    assert estimated_commission(Decimal(1000), Decimal("0.10")) == Decimal("1.00")  # 1 % cap
    assert estimated_commission(Decimal(10), None) is None


def test_api_port_comes_from_ibflow_api_port(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ApiSettings.load().http_port == 8000
    monkeypatch.setenv("IBFLOW_API_PORT", "8123")
    assert ApiSettings.load().http_port == 8123
    assert ApiSettings.load(http_port=0).http_port == 0
    monkeypatch.setenv("IBFLOW_API_PORT", "eighty")
    with pytest.raises(SettingsError) as bad:
        ApiSettings.load()
    assert str(bad.value).splitlines()[1].strip().startswith("IBFLOW_API_PORT: ")
    monkeypatch.delenv("IBFLOW_API_PORT")
    monkeypatch.setenv("IBFLOW_CORS_ORIGINS", '["https://dash.example"]')
    assert ApiSettings.load().cors_origins == ["https://dash.example"]
    assert ApiSettings.load().http_host == "127.0.0.1"


async def test_a_full_client_queue_drops_the_client_instead_of_waiting() -> None:
    client = WsClient("k", asyncio.Queue(2))
    for text in ("a", "b", "c", "d"):
        client.offer(text)
    assert client.dropped.is_set()
    assert client.queue.qsize() == 2


def test_client_filters_by_type_portfolio_and_symbol() -> None:
    client = WsClient("k", asyncio.Queue(1), portfolios=frozenset({"a"}))
    assert client.wants("ib_order", "a", None)
    assert not client.wants("ib_order", "b", None)
    assert client.wants("session", None, None)  # not about one portfolio
    assert not client.wants("quote", None, "AAPL")  # quotes only when asked for
    client.symbols = frozenset({"AAPL"})
    assert client.wants("quote", None, "AAPL")
