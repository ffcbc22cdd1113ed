"""The orders the order-manager recorded as manual, whose broker facts concern no position.

A status, fill or commission of an order no position knows is parked, because the
order-manager's ``OrderBookUpdated`` that creates the position may arrive after the
bridge's events. A manual order never belongs to a position: the order-manager keeps one
order per client order id, and a manual order's purpose never changes. So once its
``OrderBookUpdated`` has been seen, its facts can be skipped instead of parked.

This memory is an optimisation only. It is bounded (the oldest ids are forgotten first),
lives in one process (a replica, or a restart, that has not seen the update parks the
fact as before), and never holds an id of the position-monitor's own exit namespace
(``exit:…``): a position claims such an id as its exit whatever else used it.
"""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT_CAPACITY", "ManualOrders"]

DEFAULT_CAPACITY: Final = 20_000
"""Days of manual orders for a small desk; about 3 MB with the api's 36-character ids."""

_EXIT_PREFIX: Final = "exit:"


class ManualOrders:
    """Client order ids of manual orders, the ``capacity`` most recently added."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._ids: dict[str, None] = {}

    def add(self, client_order_id: str) -> None:
        """Remember ``client_order_id`` as a manual order's (not an ``exit:…`` id)."""
        if client_order_id.startswith(_EXIT_PREFIX) or client_order_id in self._ids:
            return
        self._ids[client_order_id] = None
        if len(self._ids) > self._capacity:
            del self._ids[next(iter(self._ids))]

    def __contains__(self, client_order_id: object) -> bool:
        return client_order_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)
