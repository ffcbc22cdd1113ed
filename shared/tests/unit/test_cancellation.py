"""``raise_if_cancelled``: a loop ends even when ``asyncio.wait_for`` swallowed the
cancel meant to end it (Python 3.11). ``wait_event``: an event or a timeout, and a
cancel is never taken for either."""

from __future__ import annotations

import asyncio
import sys

import pytest

from ibflow.runtime.cancellation import raise_if_cancelled, wait_event


async def _loop(*, checkpoint: bool, iterations: list[int]) -> None:
    """Cancels itself on its third iteration while ``wait_for``'s future is done, as a
    ``cancel()`` from outside lands in the step a NATS reply completes."""
    while True:
        if checkpoint:
            raise_if_cancelled()
        iterations.append(1)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        if len(iterations) == 3:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
        await asyncio.wait_for(done, 10)
        await asyncio.sleep(0)
        if len(iterations) >= 50:
            return


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for keeps cancels from 3.12")
async def test_wait_for_swallows_a_cancel_and_a_plain_loop_runs_on() -> None:
    iterations: list[int] = []

    await asyncio.create_task(_loop(checkpoint=False, iterations=iterations))

    assert len(iterations) == 50


async def test_a_loop_with_the_checkpoint_ends_at_its_next_iteration() -> None:
    iterations: list[int] = []

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(_loop(checkpoint=True, iterations=iterations))

    assert len(iterations) == 3


async def test_the_checkpoint_does_nothing_without_a_cancel() -> None:
    raise_if_cancelled()


async def test_wait_event_is_true_once_the_event_is_set() -> None:
    event = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, event.set)

    assert await wait_event(event, 10) is True


async def test_wait_event_is_false_after_its_timeout() -> None:
    assert await wait_event(asyncio.Event(), 0.01) is False


async def test_wait_event_raises_a_cancel_that_lands_as_the_event_is_set() -> None:
    event = asyncio.Event()
    waiting = asyncio.create_task(wait_event(event, 10))
    await asyncio.sleep(0)
    event.set()
    waiting.cancel()

    with pytest.raises(asyncio.CancelledError):
        await waiting
