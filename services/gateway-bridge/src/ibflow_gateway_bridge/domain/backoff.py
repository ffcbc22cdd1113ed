"""Reconnect delays: capped exponential backoff with full jitter.

Why a five-line function rather than a retry library such as tenacity: a retry
library wraps *a call* and re-invokes it until it succeeds. The supervisor has no
such call. Its loop is event-driven: a connection that was ``READY`` for hours drops
(socket closed, zombie heartbeat, error 326), the state machine says ``reconnect``,
and the supervisor sleeps, reconnects, and resets the attempt counter once the
connection is ``READY`` again. The backoff state (attempt number) lives in that loop
across events; all the loop needs from "backoff" is the delay for attempt *n*. A
pure function of ``(attempt, rng)`` is that, and it is trivially testable with a
seeded ``random.Random``.
"""

from __future__ import annotations

import random

__all__ = ["reconnect_delay"]

_MAX_EXPONENT = 64
"""2**64 * any sensible base exceeds any cap; clamping avoids float overflow."""


def reconnect_delay(
    attempt: int, *, base: float = 1.0, cap: float = 60.0, rng: random.Random
) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0 = the first retry).

    "Full jitter" (AWS Architecture Blog, "Exponential Backoff And Jitter"): a
    uniform draw in ``[0, min(cap, base * 2**attempt))``. The ceiling doubles per
    attempt up to ``cap``; the jitter spreads the reconnects of many portfolios (or
    bridges) hitting the same restarted Gateway, instead of having them retry in
    lockstep. Deterministic for a seeded ``rng``.

    Raises :class:`ValueError` for a negative ``attempt``, a non-positive ``base`` or
    a ``cap`` below ``base``.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    if base <= 0:
        raise ValueError(f"base must be > 0, got {base}")
    if cap < base:
        raise ValueError(f"cap ({cap}) must be >= base ({base})")
    ceiling = min(cap, base * 2.0 ** min(attempt, _MAX_EXPONENT))
    return rng.random() * ceiling
