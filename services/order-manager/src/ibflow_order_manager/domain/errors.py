"""Errors the order-manager's domain raises when asked for something it must refuse.

One small tree, so a caller can catch the whole domain with one ``except``::

    OrderDomainError                  base: never raised itself
    ├── IllegalTransition             the input is not allowed in the order's state
    │                                 (cancel a FILLED order, resend an order IB
    │                                 acknowledged, ...)
    ├── Overfill                      an execution would take the booked fills beyond
    │                                 the order's quantity
    └── InvalidModification           a modify that cannot apply (terminal order,
                                      new quantity not above what already filled, ...)

Every error's ``str()`` is a complete sentence naming the order's state and the
numbers, fit for an ``ErrorReply``/``OrderRejected`` reason or a dead-letter note.
They are raised for inputs that are *possible* but must not be applied; plain
programming errors (a negative price, a quantity of zero) raise :class:`ValueError`.
"""

from __future__ import annotations

from decimal import Decimal

from ibflow.contracts.enums import OrderStatus

__all__ = ["IllegalTransition", "InvalidModification", "OrderDomainError", "Overfill"]


class OrderDomainError(Exception):
    """Base of every refusal raised by the order-manager's domain."""


class IllegalTransition(OrderDomainError):  # noqa: N818 - names the condition, like Overfill
    """``action`` is not allowed while the order is ``status``."""

    def __init__(self, action: str, status: OrderStatus, detail: str = "") -> None:
        self.action = action
        self.status = status
        text = f"cannot {action}: order is {status.value}"
        super().__init__(f"{text} ({detail})" if detail else text)


class Overfill(OrderDomainError):  # noqa: N818 - the trading term for the condition
    """An execution of ``shares`` would book more than ``quantity`` (``filled`` so far).

    Never applied: the caller must not book it, and should dead-letter the execution
    and alert (the broker and our record disagree about the order's size).
    """

    def __init__(self, quantity: Decimal, filled: Decimal, shares: Decimal) -> None:
        self.quantity = quantity
        self.filled = filled
        self.shares = shares
        super().__init__(
            f"overfill: execution of {shares} would bring filled to {filled + shares}, "
            f"above the order quantity {quantity} (already filled {filled})"
        )


class InvalidModification(OrderDomainError):  # noqa: N818 - names the condition
    """A modification that cannot be applied; the message says why, with the numbers."""
