"""The market data subscription registry of one IB connection.

IB gives an account about 100 market data lines, and ib_async does not resubscribe
after a reconnect or a 1101 ("connectivity restored, data lost"; ibi#256, NT#3001).
So the bridge keeps its own registry of what is subscribed, and who wants it:

* **Reference-counted per symbol by holder** (an API WebSocket session, the
  position-monitor, ...): IB is asked for a symbol once (``reqMktData``) when its
  first holder arrives, and told to stop (``cancelMktData``) only after its last
  holder left and the line has lingered.
* **Lingering**: a symbol that loses its last holder keeps its line for
  ``linger_seconds`` (30 s by default) before it is returned to be cancelled. A
  holder coming back meanwhile (the position-monitor releases a symbol when its last
  position there closes and subscribes again when the next one opens, often a
  fraction of a second later) gets the streaming line back with nothing sent to IB.
  Every ``reqMktData``/``cancelMktData`` counts against IB's 50 messages per second
  per connection, the budget the orders of that connection share: without the
  linger, such cancel/re-request pairs were half of all paced messages and delayed
  exit orders. ``linger_seconds=0`` cancels at once, as before. A lingering line
  still occupies one of the ``max_lines``, but a new symbol at the limit evicts the
  lingering line whose linger ends first rather than being refused.
* **Leased**: every holding ends ``lease_seconds`` after its last (re)subscription.
  A holder that crashed or lost its WebSocket without unsubscribing stops renewing;
  :meth:`SubscriptionRegistry.expire` then drops it, a symbol nobody holds any more
  lingers from the end of its last lease, and is returned to be cancelled when that
  linger is over. Orphaned subscriptions do not eat lines forever.
* **Bounded**: a new symbol beyond ``max_lines`` (held and lingering lines together)
  is refused with a reason when no line lingers, instead of being sent to IB to fail
  there (error 101, max number of tickers reached).
* **Replayable**: :meth:`SubscriptionRegistry.active` (held symbols only) is what to
  request again after a reconnect, a 1101 or a data farm coming back. Lingering lines
  are not replayed: the caller forgets them with
  :meth:`SubscriptionRegistry.drop_lingering` when the lines are lost.

Pure: no I/O, no clock. ``now`` is passed in (monotonic seconds, any origin, as long
as the caller always uses the same clock). Symbols are normalised to upper case.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_LINGER_SECONDS",
    "DEFAULT_MAX_LINES",
    "SubscribeOutcome",
    "SubscribeResult",
    "SubscriptionRegistry",
    "normalise_symbol",
]

DEFAULT_MAX_LINES: Final = 100
"""IB's default number of simultaneous market data lines per account."""

DEFAULT_LINGER_SECONDS: Final = 30.0
"""How long a line nobody holds any more is kept before it is cancelled."""


class SubscribeOutcome(enum.StrEnum):
    """What :meth:`SubscriptionRegistry.subscribe` did."""

    NEW = "new"
    """First holder of the symbol: the caller must ``reqMktData``."""
    ACTIVE = "active"
    """The symbol's line was already streaming (another holder, a renewal, or a
    lingering line held again): nothing to send."""
    REFUSED = "refused"
    """Not registered (``max_lines`` lines in use, none lingering): see ``reason``."""


@dataclass(frozen=True, slots=True)
class SubscribeResult:
    """The answer of :meth:`SubscriptionRegistry.subscribe`.

    ``symbol`` is the normalised (upper-case) symbol; ``lease_until`` is when the
    holding ends unless renewed (``None`` when refused); ``reason`` explains a
    refusal (``None`` otherwise); ``evict`` is a lingering symbol dropped to make room
    for this new one at the line limit: the caller must cancel it at IB before
    requesting ``symbol`` (``None`` when no line was evicted).
    """

    symbol: str
    outcome: SubscribeOutcome
    lease_until: float | None = None
    reason: str | None = None
    evict: str | None = None

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
    """Which symbols are subscribed, by which holders, until when; which linger.

    Holders are opaque non-empty strings (e.g. ``"ws:3f2a..."``,
    ``"position-monitor"``). Each (symbol, holder) pair has one lease end; renewing
    means subscribing again, which sets it to ``now + lease_seconds``. A symbol is
    either *held* (at least one holder), *lingering* (no holder, line kept until its
    linger ends) or absent. Every method that returns symbols "to cancel" means: their
    line must be cancelled at IB now (the registry has already forgotten them). Not
    thread-safe; one registry per IB connection (or portfolio).
    """

    def __init__(
        self,
        max_lines: int = DEFAULT_MAX_LINES,
        *,
        linger_seconds: float = DEFAULT_LINGER_SECONDS,
    ) -> None:
        """Create an empty registry allowing ``max_lines`` (>= 1) lines at once, keeping
        a line nobody holds for ``linger_seconds`` (>= 0; 0 cancels at once)."""
        if max_lines < 1:
            raise ValueError(f"max_lines must be >= 1, got {max_lines}")
        if math.isnan(linger_seconds) or linger_seconds < 0:
            raise ValueError(f"linger_seconds must be >= 0, got {linger_seconds}")
        self._max_lines = max_lines
        self._linger = linger_seconds
        self._leases: dict[str, dict[str, float]] = {}
        """symbol -> holder -> lease end. A symbol is present only while held."""
        self._lingering: dict[str, float] = {}
        """symbol -> linger end, for symbols no one holds whose line is kept."""

    @property
    def max_lines(self) -> int:
        """The most lines (held or lingering symbols) that may be in use at once."""
        return self._max_lines

    @property
    def linger_seconds(self) -> float:
        """How long a symbol's line is kept after its last holder left."""
        return self._linger

    def __len__(self) -> int:
        """The number of lines in use: held and lingering symbols."""
        return len(self._leases) + len(self._lingering)

    def __contains__(self, symbol: object) -> bool:
        """Whether ``symbol`` (any case) has a line: held or lingering."""
        if not isinstance(symbol, str):
            return False
        symbol = symbol.strip().upper()
        return symbol in self._leases or symbol in self._lingering

    def subscribe(
        self, symbol: str, holder: str, now: float, lease_seconds: float
    ) -> SubscribeResult:
        """Let ``holder`` hold ``symbol`` until ``now + lease_seconds`` (or renew it).

        Returns :attr:`SubscribeOutcome.NEW` when the symbol had no line (the caller
        must request it from IB, after cancelling ``evict`` if set),
        :attr:`SubscribeOutcome.ACTIVE` when its line was streaming already (held, or
        lingering: it is held again and no longer lingers), and
        :attr:`SubscribeOutcome.REFUSED` with a reason when it is new, ``max_lines``
        lines are in use and none lingers (renewing is never refused). At the limit
        with lingering lines, the one whose linger ends first (then by symbol) is
        evicted: forgotten here and named in ``evict``. ``lease_seconds`` may be
        ``math.inf`` for a holder that only ever leaves by :meth:`unsubscribe`.

        Raises :class:`ValueError` for an empty symbol or holder, or a
        ``lease_seconds`` that is not positive.
        """
        symbol = normalise_symbol(symbol)
        _check_holder(holder)
        if math.isnan(lease_seconds) or lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be > 0, got {lease_seconds}")
        evict: str | None = None
        holders = self._leases.get(symbol)
        if holders is None and self._lingering.pop(symbol, None) is not None:
            holders = self._leases[symbol] = {}
            outcome = SubscribeOutcome.ACTIVE
        elif holders is None:
            if len(self) >= self._max_lines:
                if not self._lingering:
                    return SubscribeResult(
                        symbol=symbol,
                        outcome=SubscribeOutcome.REFUSED,
                        reason=(
                            f"market data line limit reached: {len(self)} of "
                            f"{self._max_lines} symbols already subscribed; cannot add {symbol}"
                        ),
                    )
                evict = min(self._lingering, key=lambda s: (self._lingering[s], s))
                del self._lingering[evict]
            holders = self._leases[symbol] = {}
            outcome = SubscribeOutcome.NEW
        else:
            outcome = SubscribeOutcome.ACTIVE
        lease_until = now + lease_seconds
        holders[holder] = lease_until
        return SubscribeResult(symbol=symbol, outcome=outcome, lease_until=lease_until, evict=evict)

    def unsubscribe(self, symbol: str, holder: str, now: float, *, linger: bool = True) -> bool:
        """Drop ``holder``'s holding of ``symbol``.

        Returns ``True`` when the symbol's line must be cancelled at IB now: that was
        its last holder and there is no linger (``linger_seconds`` is 0, or
        ``linger=False``, e.g. to undo a subscription whose request failed); the symbol
        is forgotten. When that was the last holder and there is a linger, the symbol
        lingers until ``now + linger_seconds`` and ``False`` is returned (see
        :meth:`lingering_until`; :meth:`expire` returns it when the linger ends).
        ``False`` too when other holders remain or ``holder`` did not hold ``symbol``
        (unsubscribing twice is harmless).
        """
        symbol = normalise_symbol(symbol)
        holders = self._leases.get(symbol)
        if holders is None or holders.pop(holder, None) is None:
            return False
        if holders:
            return False
        del self._leases[symbol]
        if not linger or self._linger == 0:
            return True
        self._lingering[symbol] = now + self._linger
        return False

    def unsubscribe_all(self, holder: str, now: float) -> list[str]:
        """Drop every holding of ``holder`` (e.g. its WebSocket closed).

        The symbols left without any holder linger until ``now + linger_seconds``.
        Returns the symbols to cancel at IB now, sorted: those left without a holder
        when ``linger_seconds`` is 0, none otherwise.
        """
        orphaned = [
            symbol
            for symbol, holders in self._leases.items()
            if holders.pop(holder, None) is not None and not holders
        ]
        for symbol in orphaned:
            del self._leases[symbol]
        if self._linger == 0:
            return sorted(orphaned)
        for symbol in orphaned:
            self._lingering[symbol] = now + self._linger
        return []

    def expire(self, now: float) -> list[str]:
        """Drop the holdings whose lease ended at or before ``now``, and end the lingers.

        A symbol left without any holder lingers from its last lease's end. Returns
        the symbols whose linger ended at or before ``now`` (those just orphaned
        included, when their linger is already over), sorted: cancel them at IB.
        Symbols that still have a holder with a running lease (another holder, or the
        same one after renewing) stay held.
        """
        orphaned: list[str] = []
        for symbol, holders in self._leases.items():
            ended = [(h, until) for h, until in holders.items() if until <= now]
            for holder, _ in ended:
                del holders[holder]
            if not holders:
                orphaned.append(symbol)
                self._lingering[symbol] = max(until for _, until in ended) + self._linger
        for symbol in orphaned:
            del self._leases[symbol]
        over = sorted(symbol for symbol, until in self._lingering.items() if until <= now)
        for symbol in over:
            del self._lingering[symbol]
        return over

    def drop_lingering(self) -> list[str]:
        """Forget every lingering symbol, sorted (their lines died with the connection,
        or are to be cancelled): a later :meth:`subscribe` of one is ``NEW`` again."""
        dropped = sorted(self._lingering)
        self._lingering.clear()
        return dropped

    def next_expiry(self) -> float | None:
        """The earliest lease or linger end (when :meth:`expire` next has work),
        ``None`` if none."""
        ends = [until for holders in self._leases.values() for until in holders.values()]
        ends.extend(self._lingering.values())
        return min(ends, default=None)

    def active(self) -> list[str]:
        """Every held symbol, sorted: what to request again after a reconnect or a 1101
        (lingering symbols are not included)."""
        return sorted(self._leases)

    def lingering(self) -> list[str]:
        """Every lingering symbol (no holder, line kept), sorted."""
        return sorted(self._lingering)

    def lingering_until(self, symbol: str) -> float | None:
        """When ``symbol``'s linger ends, ``None`` if it does not linger."""
        return self._lingering.get(normalise_symbol(symbol))

    def holders(self, symbol: str) -> list[str]:
        """The holders of ``symbol``, sorted (empty when it is not held)."""
        return sorted(self._leases.get(normalise_symbol(symbol), {}))

    def lease_until(self, symbol: str, holder: str) -> float | None:
        """When ``holder``'s holding of ``symbol`` ends, ``None`` if it holds none."""
        return self._leases.get(normalise_symbol(symbol), {}).get(holder)


def _check_holder(holder: str) -> None:
    if not holder:
        raise ValueError("holder must not be empty")
