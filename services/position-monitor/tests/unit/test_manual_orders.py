"""The bounded memory of manual orders whose facts the book skips."""

from __future__ import annotations

import pytest

from ibflow_position_monitor.domain import ManualOrders


def test_the_oldest_manual_order_is_forgotten_first() -> None:
    manual = ManualOrders(capacity=2)
    for coid in ("a", "b", "a", "c"):
        manual.add(coid)

    assert "a" not in manual
    assert "b" in manual
    assert "c" in manual
    assert len(manual) == 2


def test_an_exit_id_is_never_remembered_as_manual() -> None:
    manual = ManualOrders()
    manual.add("exit:p1")
    manual.add("exit:p1:2")

    assert "exit:p1" not in manual
    assert len(manual) == 0


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        ManualOrders(capacity=0)
