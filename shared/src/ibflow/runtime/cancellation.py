"""Cancellations that Python 3.11's ``asyncio.wait_for`` swallowed, raised again.

On Python < 3.12, ``asyncio.wait_for`` returns normally instead of raising
``CancelledError`` when its task is cancelled in the same event-loop step as the
awaited future completes (cpython#86296, cpython#107547; 3.12 rebuilt it on
``asyncio.timeout``). The cancel request is consumed, so every later ``await`` runs on
as if nothing had happened. nats-py and ib_async call ``wait_for`` on every request,
publish and flush: a loop around them can lose the ``cancel()`` meant to end it and run
on forever, and whoever awaits the cancelled task (a shutdown, a test's ``kill``) hangs.

The request is still counted by :meth:`asyncio.Task.cancelling`, so a long-running
loop calls :func:`raise_if_cancelled` at the top of each iteration. ibflow's own code
uses ``asyncio.timeout`` rather than ``asyncio.wait_for``; :func:`wait_event` is its
most common use, "wait for this event, at most so long".
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["raise_if_cancelled", "wait_event"]


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` if the current task was asked to cancel and the request
    was swallowed (a no-op outside a task or when no cancel is pending)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``event``; whether it is set. A cancellation of the
    waiting task is raised, never taken for the timeout."""
    if event.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()
