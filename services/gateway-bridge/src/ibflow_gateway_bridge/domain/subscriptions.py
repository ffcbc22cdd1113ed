"""The market data subscription registry of one IB connection.

IB gives an account about 100 market data lines, and ib_async does not resubscribe
after a reconnect or a 1101 ("connectivity restored, data lost"; ibi#256, NT#3001).
So the bridge keeps its own registry of what is subscribed, and who wants it:

* **Reference-counted per symbol by holder** (an API WebSocket session, the
  position-monitor, ...): IB is asked for a symbol once (``reqMktData``) when its
  first holder arrives and told to stop (``cancelMktData``) when its last holder
  leaves.
* **Leased**: every holding ends ``lease_seconds`` after its last (re)subscription.
  A holder that crashed or lost its WebSocket without unsubscribing stops renewing;
  :meth:`SubscriptionRegistry.expire` then drops it, and a symbol nobody holds any
  more is returned to be cancelled. Orphaned subscriptions do not eat lines forever.
* **Bounded**: a new symbol beyond ``max_lines`` is refused with a reason instead of
  being sent to IB to fail there (error 101, max number of tickers reached).
* **Replayable**: :meth:`SubscriptionRegistry.active` is what to request again after
  a reconnect, a 1101 or a data farm coming back.

Pure: no I/O, no clock. ``now`` is passed in (monotonic seconds, any origin, as long
as the caller always uses the same clock). Symbols are normalised to upper case.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_MAX_LINES",
    "SubscribeOutcome",
    "SubscribeResult",
    "SubscriptionRegistry",
    "normalise_symbol",
]

DEFAULT_MAX_LINES: Final = 100
"""IB's default number of simultaneous market data lines per account."""


class SubscribeOutcome(enum.StrEnum):
    """What :meth:`SubscriptionRegistry.subscribe` did."""

    NEW = "new"
    """First holder of the symbol: the caller must ``reqMktData``."""
    ACTIVE = "active"
    """The symbol was already subscribed (another holder, or a renewal): nothing to send."""
    REFUSED = "refused"
    """Not registered (``max_lines`` symbols already active): see ``reason``."""


@dataclass(frozen=True, slots=True)
class SubscribeResult:
    """The answer of :meth:`SubscriptionRegistry.subscribe`.

    ``symbol`` is the normalised (upper-case) symbol; ``lease_until`` is when the
    holding ends unless renewed (``None`` when refused); ``reason`` explains a
    refusal (``None`` otherwise).
    """

    symbol: str
    outcome: SubscribeOutcome
    lease_until: float | None = None
    reason: str | None = None

    @property
    def accepted(self) -> bool:
        """Whether the holder now holds the symbol."""
        return self.outcome is not SubscribeOutcome.REFUSED

    @property
    def is_new(self) -> bool:
        """Whether the caller must request the market data from IB."""
        return self.outcome is SubscribeOutcome.NEW


def normalise_symbol(symbol: str) -> str:
    """``symbol`` stripped and upper-cased; :class:`ValueError` if that leaves nothing."""
    normalised = symbol.strip().upper()
    if not normalised:
        raise ValueError("symbol must not be empty")
    return normalised


class SubscriptionRegistry:
    """Which symbols are subscribed, by which holders, until when.

    Holders are opaque non-empty strings (e.g. ``"ws:3f2a..."``,
    ``"position-monitor"``). Each (symbol, holder) pair has one lease end; renewing
    means subscribing again, which sets it to ``now + lease_seconds``. Not
    thread-safe; one registry per IB connection (or portfolio).
    """

    def __init__(self, max_lines: int = DEFAULT_MAX_LINES) -> None:
        """Create an empty registry allowing ``max_lines`` (>= 1) symbols at once."""
        if max_lines < 1:
            raise ValueError(f"max_lines must be >= 1, got {max_lines}")
        self._max_lines = max_lines
        self._leases: dict[str, dict[str, float]] = {}
        """symbol -> holder -> lease end. A symbol is present only while held."""

    @property
    def max_lines(self) -> int:
        """The most symbols that may be active at once."""
        return self._max_lines

    def __len__(self) -> int:
        """The number of active symbols."""
        return len(self._leases)

    def __contains__(self, symbol: object) -> bool:
        """Whether ``symbol`` (any case) is active."""
        return isinstance(symbol, str) and symbol.strip().upper() in self._leases

    def subscribe(
        self, symbol: str, holder: str, now: float, lease_seconds: float
    ) -> SubscribeResult:
        """Let ``holder`` hold ``symbol`` until ``now + lease_seconds`` (or renew it).

        Returns :attr:`SubscribeOutcome.NEW` when the symbol had no holder (the
        caller must request it from IB), :attr:`SubscribeOutcome.ACTIVE` when it was
        already subscribed, and :attr:`SubscribeOutcome.REFUSED` with a reason when
        it is new but ``max_lines`` symbols are already active (renewing an active
        symbol is never refused). ``lease_seconds`` may be ``math.inf`` for a holder
        that only ever leaves by :meth:`unsubscribe`.

        Raises :class:`ValueError` for an empty symbol or holder, or a
        ``lease_seconds`` that is not positive.
        """
        symbol = normalise_symbol(symbol)
        _check_holder(holder)
        if math.isnan(lease_seconds) or lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be > 0, got {lease_seconds}")
        holders = self._leases.get(symbol)
        if holders is None:
            if len(self._leases) >= self._max_lines:
                return SubscribeResult(
                    symbol=symbol,
                    outcome=SubscribeOutcome.REFUSED,
                    reason=(
                        f"market data line limit reached: {len(self._leases)} of "
                        f"{self._max_lines} symbols already subscribed; cannot add {symbol}"
                    ),
                )
            holders = self._leases[symbol] = {}
            outcome = SubscribeOutcome.NEW
        else:
            outcome = SubscribeOutcome.ACTIVE
        lease_until = now + lease_seconds
        holders[holder] = lease_until
        return SubscribeResult(symbol=symbol, outcome=outcome, lease_until=lease_until)

    def unsubscribe(self, symbol: str, holder: str) -> bool:
        """Drop ``holder``'s holding of ``symbol``.

        Returns ``True`` when that was the last holder: the symbol is no longer
        active and the caller must cancel it at IB. ``False`` otherwise, including
        when ``holder`` did not hold ``symbol`` (unsubscribing twice is harmless).
        """
        symbol = normalise_symbol(symbol)
        holders = self._leases.get(symbol)
        if holders is None or holders.pop(holder, None) is None:
            return False
        if holders:
            return False
        del self._leases[symbol]
        return True

    def unsubscribe_all(self, holder: str) -> list[str]:
        """Drop every holding of ``holder`` (e.g. its WebSocket closed).

        Returns the symbols left without any holder, sorted: cancel them at IB.
        """
        orphaned = [
            symbol
            for symbol, holders in self._leases.items()
            if holders.pop(holder, None) is not None and not holders
        ]
        for symbol in orphaned:
            del self._leases[symbol]
        return sorted(orphaned)

    def expire(self, now: float) -> list[str]:
        """Drop the holdings whose lease ended at or before ``now``.

        Returns the symbols left without any holder, sorted: they are orphaned,
        cancel them at IB. Symbols that still have a holder with a running lease
        (another holder, or the same one after renewing) stay active.
        """
        orphaned: list[str] = []
        for symbol, holders in self._leases.items():
            for holder in [h for h, until in holders.items() if until <= now]:
                del holders[holder]
            if not holders:
                orphaned.append(symbol)
        for symbol in orphaned:
            del self._leases[symbol]
        return sorted(orphaned)

    def next_expiry(self) -> float | None:
        """The earliest lease end (when :meth:`expire` next has work), ``None`` if none."""
        ends = [until for holders in self._leases.values() for until in holders.values()]
        return min(ends, default=None)

    def active(self) -> list[str]:
        """Every active symbol, sorted: what to request again after a reconnect or a 1101."""
        return sorted(self._leases)

    def holders(self, symbol: str) -> list[str]:
        """The holders of ``symbol``, sorted (empty when it is not active)."""
        return sorted(self._leases.get(normalise_symbol(symbol), {}))

    def lease_until(self, symbol: str, holder: str) -> float | None:
        """When ``holder``'s holding of ``symbol`` ends, ``None`` if it holds none."""
        return self._leases.get(normalise_symbol(symbol), {}).get(holder)


def _check_holder(holder: str) -> None:
    if not holder:
        raise ValueError("holder must not be empty")
