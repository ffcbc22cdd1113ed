"""Bad traffic on the bus: every broker fact and order update published again (same
ids inside the duplicate window; new ids, as after it, in reversed and shuffled order),
and poison messages on consumed subjects (dead-lettered with the reason while the rest
continue). The order-manager's and the position-monitor's books must not move."""

from __future__ import annotations

import base64
import random
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ibflow.bus import subjects
from ibflow.contracts import MessageDeadLettered

from .harness import (
    PORTFOLIO,
    POS_ACCOUNT,
    POS_PORTFOLIO,
    POSITION_SYMBOLS,
    Stack,
    assert_books_match_the_broker,
    chaos_stack,
    run_burst,
    start_services,
    wait_for,
    wait_settled,
)
from .positions import (
    STOP,
    TARGET,
    Ticker,
    assert_positions_match_the_broker,
    open_positions,
    position_id,
    positions_left,
)

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

SYMBOLS = POSITION_SYMBOLS[:4]
DURABLES = (
    "order-manager-facts",
    "position-monitor-orders",
    "position-monitor-status",
    "position-monitor-executions",
    "position-monitor-commissions",
)
ORDER_EVENTS = f"{subjects.EVENTS_PREFIX}.order."


async def stored(stack: Stack, prefix: str) -> list[Any]:
    """Every message of ``IBFLOW_EVENTS`` on ``<prefix>>`` now, in stream order."""
    js = stack.nc.jetstream()
    sub = await js.subscribe(f"{prefix}>", ordered_consumer=True)
    found = []
    try:
        while True:
            msg = await sub.next_msg(timeout=5)
            found.append(msg)
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return found


async def republish(stack: Stack, messages: list[Any], *, new_ids: bool) -> int:
    """Publish copies; ``new_ids``: fresh ``Nats-Msg-Id`` (stored again, as after the
    duplicate window), else the original ids (JetStream must store nothing). Returns
    how many the stream stored."""
    js = stack.nc.jetstream()
    stored_count = 0
    for msg in messages:
        headers = dict(msg.headers or {})
        if new_ids:
            headers["Nats-Msg-Id"] = f"chaos-copy-{uuid.uuid4().hex}"
        ack = await js.publish(msg.subject, msg.data, headers=headers)
        stored_count += 0 if ack.duplicate else 1
    return stored_count


async def drained(stack: Stack) -> str | None:
    """``None`` once every consumer has handled (acked) everything in the stream."""
    js = stack.nc.jetstream()
    busy = {}
    for durable in DURABLES:
        info = await js.consumer_info(subjects.EVENTS_STREAM.name, durable)
        if info.num_pending or info.num_ack_pending:
            busy[durable] = (info.num_pending, info.num_ack_pending)
    return f"consumers busy (pending, ack pending): {busy}" if busy else None


async def settle_all(stack: Stack) -> None:
    async def rest() -> str | None:
        return await drained(stack) or await positions_left(stack)

    await wait_settled(stack, within=180, extra=rest)
    await wait_settled(stack, within=60, account=POS_ACCOUNT, portfolio=POS_PORTFOLIO)


async def assert_all_books(stack: Stack, coids: list[str]) -> str:
    books = await assert_books_match_the_broker(stack, set(coids))
    await assert_positions_match_the_broker(stack, SYMBOLS)
    pids = [position_id(s) for s in SYMBOLS]
    pos_books = await assert_books_match_the_broker(
        stack,
        {f"{kind}:{p}" for p in pids for kind in ("entry", "exit")},
        account=POS_ACCOUNT,
        portfolio=POS_PORTFOLIO,
    )
    return f"{books}; positions portfolio {pos_books}"


async def a_stack_with_positions(stack: Stack, ticking: Ticker) -> None:
    await start_services(
        stack,
        "gateway-bridge",
        "order-manager",
        "position-monitor",
        portfolios=(PORTFOLIO, POS_PORTFOLIO),
    )
    await open_positions(stack, SYMBOLS)
    del ticking


@pytest.mark.timeout(400)
async def test_duplicated_and_reordered_events_on_the_bus_change_no_books(
    tmp_path: Path,
) -> None:
    total = 300
    async with chaos_stack(tmp_path, with_positions=True) as stack:
        ticking = Ticker(stack)
        await a_stack_with_positions(stack, ticking)
        copies: Counter[str] = Counter()

        async def duplicate_so_far() -> None:
            # mid-burst: every order event so far again, same ids, then new ids reversed
            messages = await stored(stack, ORDER_EVENTS)
            copies["same id, stored"] += await republish(stack, messages, new_ids=False)
            copies["new id, reversed"] += await republish(stack, messages[::-1], new_ids=True)
            ticking.move(SYMBOLS[0], STOP - 1)  # a stop hit among the copies
            ticking.move(SYMBOLS[1], STOP - 1)

        async with ticking:
            burst = await run_burst(stack, total, faults=[(total // 2, duplicate_so_far)])
            ticking.move(SYMBOLS[2], TARGET + 1)
            ticking.move(SYMBOLS[3], TARGET + 1)
            await settle_all(stack)
            before = await assert_all_books(stack, burst.coids)
            # after everything settled: all of it again, new ids, shuffled
            messages = await stored(stack, ORDER_EVENTS)
            random.Random(7).shuffle(messages)
            copies["new id, shuffled"] += await republish(stack, messages, new_ids=True)
            await settle_all(stack)
        after = await assert_all_books(stack, burst.coids)
        assert after == before
        assert copies["same id, stored"] == 0, "JetStream stored a copy with the same msg id"
        assert copies["new id, reversed"] > 0
        assert copies["new id, shuffled"] > total
        dead = await dead_letters(stack)
        assert not dead, dead
        print(f"\ncopies published {dict(copies)}; books unchanged: {after}")


async def dead_letters(stack: Stack) -> list[MessageDeadLettered]:
    js = stack.nc.jetstream()
    info = await js.stream_info(subjects.DEAD_LETTER_STREAM.name)
    letters = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        if info.state.messages == 0:
            break
        msg = await js.get_msg(subjects.DEAD_LETTER_STREAM.name, seq)
        letters.append(MessageDeadLettered.from_json(msg.data or b""))
    return letters


@pytest.mark.chaos_fast
@pytest.mark.timeout(400)
async def test_a_poison_message_is_dead_lettered_with_the_reason_and_the_rest_continue(
    tmp_path: Path,
) -> None:
    total = 300
    undecodable = b"\x00\xffnot json{"
    invalid = b'{"exec_id": 5, "commission": "lots"}'
    async with chaos_stack(tmp_path, with_positions=True) as stack:
        ticking = Ticker(stack)
        await a_stack_with_positions(stack, ticking)

        async def poison() -> None:
            js = stack.nc.jetstream()
            await js.publish(
                subjects.execution(PORTFOLIO), undecodable, headers={"Nats-Msg-Id": "poison-1"}
            )
            await js.publish(
                subjects.commission(POS_PORTFOLIO), invalid, headers={"Nats-Msg-Id": "poison-2"}
            )
            ticking.move(SYMBOLS[0], STOP - 1)
            ticking.move(SYMBOLS[1], STOP - 1)

        async with ticking:
            burst = await run_burst(stack, total, faults=[(total // 3, poison)])
            ticking.move(SYMBOLS[2], TARGET + 1)
            ticking.move(SYMBOLS[3], TARGET + 1)
            await settle_all(stack)
        books = await assert_all_books(stack, burst.coids)

        letters: list[MessageDeadLettered] = []

        async def all_dead_lettered() -> bool:
            letters[:] = await dead_letters(stack)
            return len(letters) >= 4

        await wait_for(all_dead_lettered, within=30, what="four dead letters")
        by_consumer = Counter(
            (letter.consumer, base64.b64decode(letter.payload_b64)) for letter in letters
        )
        assert by_consumer == {
            ("order-manager-facts", undecodable): 1,
            ("order-manager-facts", invalid): 1,
            ("position-monitor-executions", undecodable): 1,
            ("position-monitor-commissions", invalid): 1,
        }
        assert all(letter.reason for letter in letters)
        assert {letter.original_msg_id for letter in letters} == {"poison-1", "poison-2"}
        reasons = sorted({letter.reason[:80] for letter in letters})
        print(f"\npoison dead-lettered by 4 consumers ({reasons}); the rest booked: {books}")
