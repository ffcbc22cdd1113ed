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
uses ``asyncio.timeout`` rather than ``asyncio.wait_for``.
"""

from __future__ import annotations

import asyncio

__all__ = ["raise_if_cancelled"]


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` if the current task was asked to cancel and the request
    was swallowed (a no-op outside a task or when no cancel is pending)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
