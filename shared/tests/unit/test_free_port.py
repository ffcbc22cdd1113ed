"""``free_port``: the ports tests and the bench hand to servers they start."""

from __future__ import annotations

import socket

import pytest

from ibflow.testing import embedded
from ibflow.testing.embedded import free_port


def test_many_picks_in_one_process_never_repeat_a_port() -> None:
    picks = [free_port() for _ in range(300)]

    assert len(set(picks)) == len(picks)


def test_picks_stay_below_the_kernels_ephemeral_range_so_no_bind_0_can_take_them() -> None:
    ephemeral_low, _ = embedded._ephemeral_range()

    picks = [free_port() for _ in range(50)]

    assert all(port < ephemeral_low for port in picks)


def test_a_picked_port_can_be_bound_at_once() -> None:
    port = free_port()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()


class _Sequence:
    """Stands in for the random generator: hands out the given ports in order."""

    def __init__(self, *ports: int) -> None:
        self._ports = iter(ports)

    def randrange(self, start: int, stop: int) -> int:
        return next(self._ports)


def test_a_port_another_process_listens_on_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy = listener.getsockname()[1]
        ephemeral_low, _ = embedded._ephemeral_range()
        idle = next(
            port
            for port in range(ephemeral_low - 1, 10_000, -1)
            if port not in embedded._handed_out and embedded._bindable("127.0.0.1", port)
        )
        monkeypatch.setattr(embedded, "_ephemeral_range", lambda: (busy + 1, busy + 5_000))
        monkeypatch.setattr(embedded, "_port_random", _Sequence(busy, idle))

        assert free_port() == idle
