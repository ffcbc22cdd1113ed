"""Typed request/reply over a real nats-server: replies, error replies, no responder."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from decimal import Decimal

import pytest
from nats.aio.client import Client as NatsClient

from ibflow.bus import (
    Reject,
    RemoteError,
    RequestError,
    RequestTimeout,
    request,
    serve,
)
from ibflow.contracts.base import Command, Event, Money

pytestmark = pytest.mark.integration

SUBJECT = "ibflow.cmd.v1.quote_widget"


class QuoteWidget(Command):
    """Test-only command."""

    widget: str
    quantity: int


class WidgetQuoted(Event):
    """Test-only reply."""

    widget: str
    price: Money


class Unrelated(Command):
    """A command of another shape, sent to the wrong subject."""

    color: str


async def quote(cmd: QuoteWidget) -> WidgetQuoted:
    if cmd.widget == "forbidden":
        raise Reject("widget is embargoed")
    if cmd.widget == "explode":
        raise ZeroDivisionError("oops")
    if cmd.widget == "conflict":
        raise RemoteError("conflict", "already quoted")
    return WidgetQuoted(widget=cmd.widget, price=Decimal("1.10") * cmd.quantity, **cmd.caused())


async def raw(nc: NatsClient, payload: bytes) -> dict[str, dict[str, str]]:
    reply = await nc.request(SUBJECT, payload, timeout=2.0)
    decoded: dict[str, dict[str, str]] = json.loads(reply.data)
    return decoded


async def test_request_reply_returns_typed_reply(nc: NatsClient) -> None:
    await serve(nc, SUBJECT, QuoteWidget, quote, queue="quoter")
    cmd = QuoteWidget(widget="w1", quantity=3, correlation_id=uuid.uuid4())

    reply = await request(nc, SUBJECT, cmd, WidgetQuoted, timeout=2.0)

    assert isinstance(reply, WidgetQuoted)
    assert reply.price == Decimal("3.30")
    assert reply.correlation_id == cmd.correlation_id
    assert reply.causation_id == cmd.event_id


async def test_invalid_request_gets_error_reply(nc: NatsClient) -> None:
    await serve(nc, SUBJECT, QuoteWidget, quote)

    not_json = await raw(nc, b"{nope")
    assert not_json["error"]["code"] == "invalid_request"
    assert "Invalid JSON" in not_json["error"]["message"]

    wrong_shape = await raw(nc, b'{"widget": "w1", "quantity": "many"}')
    assert wrong_shape["error"]["code"] == "invalid_request"
    assert "quantity" in wrong_shape["error"]["message"]

    with pytest.raises(RemoteError) as caught:
        await request(nc, SUBJECT, Unrelated(color="red"), WidgetQuoted, timeout=2.0)
    assert caught.value.code == "invalid_request"
    assert "widget: Field required" in caught.value.message

    # the responder survived all of that
    ok = await request(nc, SUBJECT, QuoteWidget(widget="w", quantity=1), WidgetQuoted)
    assert ok.price == Decimal("1.10")


async def test_handler_refusal_and_failure_get_error_replies(nc: NatsClient) -> None:
    await serve(nc, SUBJECT, QuoteWidget, quote)

    with pytest.raises(RemoteError) as refused:
        await request(nc, SUBJECT, QuoteWidget(widget="forbidden", quantity=1), WidgetQuoted)
    assert (refused.value.code, refused.value.message) == ("refused", "widget is embargoed")

    with pytest.raises(RemoteError) as relayed:
        await request(nc, SUBJECT, QuoteWidget(widget="conflict", quantity=1), WidgetQuoted)
    assert (relayed.value.code, relayed.value.message) == ("conflict", "already quoted")

    started = time.monotonic()
    with pytest.raises(RemoteError) as internal:
        await request(nc, SUBJECT, QuoteWidget(widget="explode", quantity=1), WidgetQuoted)
    assert internal.value.code == "internal"
    assert "oops" not in internal.value.message  # internals stay in the service's log
    assert time.monotonic() - started < 1.0  # answered, not left to time out

    ok = await request(nc, SUBJECT, QuoteWidget(widget="w", quantity=2), WidgetQuoted)
    assert ok.price == Decimal("2.20")


async def test_request_without_responder_times_out_or_errors_clearly(nc: NatsClient) -> None:
    started = time.monotonic()
    with pytest.raises(RequestError) as nobody:
        await request(nc, SUBJECT, QuoteWidget(widget="w", quantity=1), WidgetQuoted, timeout=5)
    assert nobody.value.code == "no_responders"
    assert SUBJECT in str(nobody.value)
    assert not isinstance(nobody.value, RequestTimeout)
    assert time.monotonic() - started < 1.0  # told at once, not after the timeout

    silent = await nc.subscribe(SUBJECT)  # listens, never answers
    started = time.monotonic()
    with pytest.raises(RequestTimeout) as slow:
        await request(nc, SUBJECT, QuoteWidget(widget="w", quantity=1), WidgetQuoted, timeout=0.3)
    assert slow.value.code == "timeout"
    assert 0.25 <= time.monotonic() - started < 2.0
    await silent.unsubscribe()


async def test_undecodable_reply_is_an_invalid_reply_error(nc: NatsClient) -> None:
    async def wrong(cmd: QuoteWidget) -> Unrelated:
        return Unrelated(color="blue")

    await serve(nc, SUBJECT, QuoteWidget, wrong)
    with pytest.raises(RequestError) as caught:
        await request(nc, SUBJECT, QuoteWidget(widget="w", quantity=1), WidgetQuoted)
    assert caught.value.code == "invalid_reply"
    assert "price" in caught.value.message


@pytest.mark.parametrize("concurrent", [False, True])
async def test_a_waiting_request_holds_up_the_next_only_without_concurrent(
    nc: NatsClient, concurrent: bool
) -> None:
    release = asyncio.Event()
    answered: list[str] = []

    async def slow_first(cmd: QuoteWidget) -> WidgetQuoted:
        if cmd.widget == "slow":
            await release.wait()
        answered.append(cmd.widget)
        return WidgetQuoted(widget=cmd.widget, price=Decimal(1), **cmd.caused())

    sub = await serve(nc, SUBJECT, QuoteWidget, slow_first, concurrent=concurrent)
    slow = asyncio.ensure_future(
        request(nc, SUBJECT, QuoteWidget(widget="slow", quantity=1), WidgetQuoted, timeout=5)
    )
    await asyncio.sleep(0.1)  # the slow request is being handled

    try:
        fast = QuoteWidget(widget="fast", quantity=1)
        if concurrent:
            assert (await request(nc, SUBJECT, fast, WidgetQuoted, timeout=2)).widget == "fast"
            assert answered == ["fast"]
        else:
            with pytest.raises(RequestTimeout):
                await request(nc, SUBJECT, fast, WidgetQuoted, timeout=0.3)
            assert answered == []
    finally:
        release.set()
        assert (await slow).widget == "slow"
        await sub.unsubscribe()
