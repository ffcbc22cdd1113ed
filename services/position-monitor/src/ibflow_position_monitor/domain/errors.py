"""Errors the position-monitor's domain raises when asked for something it must refuse.

One small tree, so a caller can catch the whole domain with one ``except``::

    PositionDomainError               base: never raised itself
    ├── IllegalTransition             the input is not allowed in the position's status
    │                                 (an exit for a PENDING position, a second exit while
    │                                 one is working, new levels for a CLOSED one...)
    ├── Overfill                      an execution would take the entry fills beyond the
    │                                 planned quantity, or the exit fills beyond what the
    │                                 entries bought (the position would go through zero)
    ├── SideMismatch                  an execution's side is not the one its role needs
    │                                 (a BUY booked as the exit of a LONG position)
    ├── ConflictingExecution          an execId already booked comes back with other
    │                                 figures (order, shares or price)
    ├── UnknownExecution              a commission for an execId this position has not
    │                                 booked (it arrived before its fill: park it)
    └── InvalidLevels                 a stop / target that is not positive, or on the
                                      wrong side of each other for the position's side

Every error's ``str()`` is a complete sentence with the numbers, fit for a log line, a
dead-letter note or a command reply. They are raised for inputs that are *possible*
but must not be applied; plain programming errors (a negative price, a malformed id)
raise :class:`ValueError`. Nothing is applied when one is raised.
"""

from __future__ import annotations

from decimal import Decimal

from ibflow.contracts.enums import PositionStatus

__all__ = [
    "ConflictingExecution",
    "IllegalTransition",
    "InvalidLevels",
    "Overfill",
    "PositionDomainError",
    "SideMismatch",
    "UnknownExecution",
]


class PositionDomainError(Exception):
    """Base of every refusal raised by the position-monitor's domain."""


class IllegalTransition(PositionDomainError):  # noqa: N818 - names the condition
    """``action`` is not allowed while the position is ``status``."""

    def __init__(self, action: str, status: PositionStatus, detail: str = "") -> None:
        self.action = action
        self.status = status
        text = f"cannot {action}: position is {status.value}"
        super().__init__(f"{text} ({detail})" if detail else text)


class Overfill(PositionDomainError):  # noqa: N818 - the trading term for the condition
    """An execution of ``shares`` would take ``booked`` beyond ``limit``.

    For an entry fill ``limit`` is the planned quantity; for an exit fill it is the
    quantity the entries bought (an exit may never turn a long into a short). Never
    applied: the caller must not book it, and should dead-letter it and alert (our book
    and the broker disagree, or an execId correction was booked as a second fill).
    """

    def __init__(self, role: str, limit: Decimal, booked: Decimal, shares: Decimal) -> None:
        self.role = role
        self.limit = limit
        self.booked = booked
        self.shares = shares
        bound = "the planned quantity" if role == "entry" else "the quantity bought in"
        super().__init__(
            f"overfill: {role} execution of {shares} would bring the {role} fills to "
            f"{booked + shares}, above {bound} {limit} (already {booked})"
        )


class SideMismatch(PositionDomainError):  # noqa: N818 - names the condition
    """An execution on side ``side`` cannot be the ``role`` of a ``position_side`` position."""

    def __init__(self, role: str, position_side: str, side: str, expected: str) -> None:
        self.role = role
        self.side = side
        self.expected = expected
        super().__init__(
            f"side mismatch: the {role} of a {position_side} position is a {expected}, "
            f"got a {side} execution"
        )


class ConflictingExecution(PositionDomainError):  # noqa: N818 - names the condition
    """``exec_id`` is already booked with other figures; the message shows both."""

    def __init__(self, exec_id: str, booked: str, given: str) -> None:
        self.exec_id = exec_id
        super().__init__(
            f"execution {exec_id} is already booked as {booked}; refusing it again as {given}"
        )


class UnknownExecution(PositionDomainError):  # noqa: N818 - names the condition
    """A commission for ``exec_id``, which this position has not booked.

    Normal when the commission overtakes its fill (failure mode 10): park it (a
    ``position_executions`` row without a position) and pass it as ``commission=`` when
    the execution is booked.
    """

    def __init__(self, exec_id: str, position_id: str) -> None:
        self.exec_id = exec_id
        super().__init__(
            f"commission for execution {exec_id}, which position {position_id} has not booked (yet)"
        )


class InvalidLevels(PositionDomainError):  # noqa: N818 - names the condition
    """A stop-loss / take-profit pair that cannot protect the position; says why."""
