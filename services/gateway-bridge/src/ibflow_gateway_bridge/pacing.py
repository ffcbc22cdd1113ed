"""The outbound message pacer of one IB connection.

IB accepts at most **50 messages per second per connection, all outbound message
types combined** (orders, cancels, market data requests, account and position
queries...). Going over earns error 100 ("Max rate of messages per second has been
exceeded") and, if it goes on, a dropped connection. ib_async has its own throttle
(``Client.MaxRequests = 45`` per ``RequestsInterval = 1 s``) and we leave it on, but
it sits *beneath* us and is invisible: requests it holds back show up nowhere. So
every request the bridge sends through a connection first passes ONE shared
:class:`Pacer`, set to **at most 40 messages/s** by default:

* 40 < 45 keeps ib_async's throttle a safety net that never engages in normal
  operation, so the queue we measure (``ibflow_bridge_pacer_queue_depth``) is the
  real queue;
* 40 < 50 leaves headroom for messages the pacer does not see (ib_async's own
  keep-alives and the requests it sends while connecting and synchronising) and for
  IB measuring its window differently from us.

A 09:15 burst of orders across portfolios therefore **queues, it never fails**:
:meth:`Pacer.acquire` waits its turn and only raises :class:`PacerClosed` when the
connection goes away.

**Whose turn: by :class:`Priority`, then in arrival order.** A queue that is strictly
first-in-first-out makes a stop-loss exit wait behind every entry of a 500-order
morning burst (12.5 s at 40/s), and an order wait behind market data requests that
could as well leave later. So each message is paced with a priority:
:attr:`Priority.URGENT` (cancels and exit orders: they reduce risk) before
:attr:`Priority.ORDER` (entries, manual orders, modifications, and the queries that
decide whether an order may be sent) before :attr:`Priority.DATA` (market data
requests and cancellations); messages of one priority leave in arrival order. A
message that arrives while one of lower priority sleeps for its turn takes that turn.
A lower priority can only be held back while higher ones keep the window full: the
exits and cancels of a portfolio are bounded by its positions and orders.

**Why a sliding window and not a classic token bucket.** A bucket of capacity ``B``
refilled at ``r`` tokens/s lets ``B + r`` messages through in one second: with
``B = r = 40`` that is 80 messages between t=0 and t=1, above IB's 50. The pacer
instead returns each token exactly one second after it was spent (a token bucket
whose refill is the sliding-window log of the last ``rate`` sends, like ib_async's
throttle), which guarantees **no more than ``rate`` messages in any 1-s window**
while still letting an idle connection send ``rate`` messages at once. An optional
``burst < rate`` adds a classic bucket on top (capacity ``burst``, refilled at
``rate``/s) to spread the messages out more evenly.

Time comes from an injectable ``clock`` and ``sleep`` (by default the running
loop's monotonic :meth:`~asyncio.AbstractEventLoop.time` and :func:`asyncio.sleep`),
so tests drive it with a fake clock and never really sleep.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from prometheus_client import Counter, Gauge

__all__ = [
    "DEFAULT_RATE",
    "MAX_RATE",
    "PACED_MESSAGES",
    "QUEUE_DEPTH",
    "Pacer",
    "PacerClosed",
    "Priority",
]

DEFAULT_RATE: Final = 40
"""Messages per second a :class:`Pacer` allows by default (IB's limit is 50)."""

MAX_RATE: Final = 45
"""The highest accepted ``rate``: ib_async's own throttle (45/s). Above it, that
throttle, not the pacer, would decide, and the queue depth metric would lie."""

_WINDOW: Final = 1.0
"""Seconds of the sliding window ``rate`` applies to."""

_EPSILON: Final = 1e-9
"""Tolerance on fractional bucket tokens (float rounding must not stall a waiter)."""

QUEUE_DEPTH: Final = Gauge(
    "ibflow_bridge_pacer_queue_depth",
    "Outbound IB messages waiting in the pacer of a portfolio's connection.",
    ["portfolio"],
)
PACED_MESSAGES: Final = Counter(
    "ibflow_bridge_paced_messages_total",
    "Outbound IB messages let through by the pacer of a portfolio's connection.",
    ["portfolio"],
)


class Priority(enum.IntEnum):
    """Whose turn comes first in a :class:`Pacer` (lower first; see the module docstring)."""

    URGENT = 0
    """Cancels and exit orders: they reduce risk."""
    ORDER = 1
    """Entries, manual orders, modifications, what-if previews, and the broker queries
    an order waits for."""
    DATA = 2
    """Market data requests and cancellations."""


@dataclass(eq=False, slots=True)
class _Waiter:
    """One :meth:`Pacer.acquire` in the queue; ``poke`` wakes it to look again."""

    n: int
    poke: asyncio.Future[None] | None = None

    def wake(self) -> None:
        if self.poke is not None and not self.poke.done():
            self.poke.set_result(None)


class PacerClosed(Exception):  # noqa: N818 - the name reads as the condition, like TimeoutError
    """The pacer was closed (the connection went away): the message must not be sent."""


class Pacer:
    """Rate limiter shared by every request of one IB connection.

    At most ``rate`` messages complete :meth:`acquire` in any 1-s window (see the
    module docstring for why 40 by default, and why a sliding window). Waiters are
    served by :class:`Priority`, then in arrival order: within a priority a large
    request cannot be starved by a stream of small ones, and orders leave in the order
    they were placed.

    ``portfolio`` labels the metrics: ``ibflow_bridge_pacer_queue_depth`` (messages
    waiting) and ``ibflow_bridge_paced_messages_total`` (messages let through).

    One instance per connection: :meth:`close` it on disconnect and create a new one
    for the next connection. Not thread-safe; use it from one event loop.
    """

    def __init__(
        self,
        portfolio: str,
        *,
        rate: int = DEFAULT_RATE,
        burst: int | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        """Create an open pacer.

        ``rate``: messages per second, ``1..MAX_RATE``. ``burst``: the most messages
        sent back to back, ``1..rate`` (default ``rate``). ``clock`` returns
        monotonic seconds (default: the running loop's ``time()``); ``sleep``
        waits that many seconds on that clock (default :func:`asyncio.sleep`).

        Raises :class:`ValueError` for a ``rate`` or ``burst`` out of range.
        """
        if not 1 <= rate <= MAX_RATE:
            raise ValueError(f"rate must be between 1 and {MAX_RATE} messages/s, got {rate}")
        burst = rate if burst is None else burst
        if not 1 <= burst <= rate:
            raise ValueError(f"burst must be between 1 and rate ({rate}), got {burst}")
        self._portfolio = portfolio
        self._rate = rate
        self._burst = burst
        self._clock = clock if clock is not None else _loop_time
        self._sleep = sleep if sleep is not None else asyncio.sleep
        self._sent: deque[float] = deque()
        """Completion times of the messages of the last window, oldest first."""
        self._tokens = float(burst)
        self._tokens_at: float | None = None
        self._queue: list[tuple[int, int, _Waiter]] = []
        """Heap of the waiters: (priority, arrival number, waiter); its head has the turn."""
        self._arrivals = itertools.count()
        self._closed = False
        self._depth = 0
        # inc/dec rather than set: a closed pacer still draining its waiters and the
        # next connection's pacer share the label.
        self._depth_gauge = QUEUE_DEPTH.labels(portfolio=portfolio)
        self._sent_counter = PACED_MESSAGES.labels(portfolio=portfolio)

    @property
    def rate(self) -> int:
        """Messages per second allowed."""
        return self._rate

    @property
    def burst(self) -> int:
        """The most messages sent back to back."""
        return self._burst

    @property
    def queue_depth(self) -> int:
        """Messages waiting in :meth:`acquire` (not yet let through)."""
        return self._depth

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    async def acquire(self, n: int = 1, priority: Priority = Priority.ORDER) -> None:
        """Wait until ``n`` messages may be sent now, in ``priority`` order then in
        arrival order, and count them.

        Call it right before sending; ``n`` > 1 for a request that is several
        messages (e.g. a bracket order: parent and two children). Raises
        :class:`PacerClosed` if the pacer is or gets closed while waiting, and
        :class:`ValueError` if ``n`` is not in ``1..burst`` (such a request could
        never be let through). Cancelling a waiter removes it from the queue.
        """
        if not 1 <= n <= self._burst:
            raise ValueError(f"n must be between 1 and burst ({self._burst}), got {n}")
        if self._closed:
            raise PacerClosed(f"pacer of portfolio {self._portfolio!r} is closed")
        if not self._queue and self._delay(n, self._clock()) <= 0:
            self._record(n, self._clock())
            self._sent_counter.inc(n)
            return
        waiter = _Waiter(n)
        entry = (int(priority), next(self._arrivals), waiter)
        head = self._queue[0] if self._queue else None
        heapq.heappush(self._queue, entry)
        if head is not None and self._queue[0] is entry:
            head[2].wake()  # it may be sleeping for the turn that is now this one's
        self._depth += n
        self._depth_gauge.inc(n)
        try:
            await self._wait_turn(entry)
        finally:
            self._depth -= n
            self._depth_gauge.dec(n)
            if entry in self._queue:  # cancelled, or closed while waiting
                was_head = self._queue[0] is entry
                self._queue.remove(entry)
                heapq.heapify(self._queue)
                if was_head and self._queue:
                    self._queue[0][2].wake()
        self._sent_counter.inc(n)

    async def _wait_turn(self, entry: tuple[int, int, _Waiter]) -> None:
        """Sleep until ``entry`` heads the queue and its messages fit the window, then
        take it out of the queue, record its messages and hand the turn on."""
        waiter = entry[2]
        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                raise PacerClosed(f"pacer of portfolio {self._portfolio!r} is closed")
            waiter.poke = loop.create_future()
            if self._queue[0] is not entry:
                await waiter.poke
                continue
            delay = self._delay(waiter.n, self._clock())
            if delay <= 0:
                break
            await self._sleep_unless_poked(delay, waiter.poke)
        heapq.heappop(self._queue)
        self._record(waiter.n, self._clock())
        if self._queue:
            self._queue[0][2].wake()

    def close(self) -> None:
        """Close for good: every current and future :meth:`acquire` raises :class:`PacerClosed`.

        Idempotent. Waiters wake at once (the one sleeping for its turn included).
        """
        self._closed = True
        for _, _, waiter in self._queue:
            waiter.wake()

    def _delay(self, n: int, now: float) -> float:
        """Seconds until ``n`` messages may be sent (<= 0: now)."""
        while self._sent and self._sent[0] + _WINDOW <= now:
            self._sent.popleft()
        delay = 0.0
        excess = len(self._sent) + n - self._rate
        if excess > 0:
            # The ``excess`` oldest sends must leave the window first.
            delay = self._sent[excess - 1] + _WINDOW - now
        if self._burst < self._rate:
            self._refill(now)
            missing = n - self._tokens
            if missing > _EPSILON:
                delay = max(delay, missing / self._rate)
        return delay

    def _refill(self, now: float) -> None:
        if self._tokens_at is not None:
            elapsed = max(0.0, now - self._tokens_at)
            self._tokens = min(float(self._burst), self._tokens + elapsed * self._rate)
        self._tokens_at = now

    def _record(self, n: int, now: float) -> None:
        self._sent.extend([now] * n)
        if self._burst < self._rate:
            self._tokens = max(0.0, self._tokens - n)

    async def _sleep_unless_poked(self, delay: float, poke: asyncio.Future[None]) -> None:
        sleeper = asyncio.ensure_future(self._sleep(delay))
        try:
            await asyncio.wait({sleeper, poke}, return_when=asyncio.FIRST_COMPLETED)
            if sleeper.done():
                sleeper.result()  # a failing sleep must not pass silently
        finally:
            sleeper.cancel()


def _loop_time() -> float:
    return asyncio.get_running_loop().time()
