"""The per-portfolio connection state machine: every transition, the IB codes that
drive it (1100/1101/1102, farms, 326), the zombie heartbeat, and ignored inputs."""

from __future__ import annotations

import pytest

from ibflow.contracts.enums import ConnectionState as S
from ibflow_gateway_bridge.domain.connection import ConnectionMachine, Transition

LOST = "Connectivity between IB and Trader Workstation has been lost."
RESTORED_LOST = "Connectivity between IB and TWS has been restored - data lost."
RESTORED_KEPT = "Connectivity between IB and TWS has been restored - data maintained."
MD_BROKEN = "Market data farm connection is broken:usfarm"
MD_OK = "Market data farm connection is OK:usfarm"
MD2_BROKEN = "Market data farm connection is broken:eufarm"
MD2_OK = "Market data farm connection is OK:eufarm"
HMDS_BROKEN = "HMDS data farm connection is broken:ushmds"
HMDS_OK = "HMDS data farm connection is OK:ushmds"
SECDEF_BROKEN = "Sec-def data farm connection is broken:secdefil"
SECDEF_OK = "Sec-def data farm connection is OK:secdefil"


def machine_in(state: S) -> ConnectionMachine:
    """A machine driven into ``state`` through its public inputs."""
    machine = ConnectionMachine()
    if state is S.DISCONNECTED:
        return machine
    machine.connect_started()
    if state is S.CONNECTING:
        return machine
    machine.socket_connected()
    if state is S.SYNCHRONISING:
        return machine
    if state is S.IB_CONNECTIVITY_LOST:
        machine.synchronised()
        machine.broker_error(1100, LOST)
        return machine
    if state is S.DEGRADED:
        machine.broker_error(2103, MD_BROKEN)
    machine.synchronised()
    assert machine.state is state
    return machine


# -- the happy path --------------------------------------------------------------


def test_a_new_machine_is_disconnected_and_refuses_orders() -> None:
    machine = ConnectionMachine()
    assert machine.state is S.DISCONNECTED
    assert not machine.accepts_orders
    assert machine.farms_down == frozenset()


def test_connect_handshake_and_synchronisation_reach_ready() -> None:
    machine = ConnectionMachine()
    steps = [machine.connect_started(), machine.socket_connected(), machine.synchronised()]
    assert [(t.previous, t.current) for t in steps if t is not None] == [
        (S.DISCONNECTED, S.CONNECTING),
        (S.CONNECTING, S.SYNCHRONISING),
        (S.SYNCHRONISING, S.READY),
    ]
    assert all(t is not None and not t.reconnect and not t.resubscribe for t in steps)
    assert all(t is not None and t.changed and t.reason for t in steps)
    assert machine.state is S.READY


@pytest.mark.parametrize(
    ("state", "accepts"),
    [
        (S.DISCONNECTED, False),
        (S.CONNECTING, False),
        (S.SYNCHRONISING, False),
        (S.READY, True),
        (S.DEGRADED, True),
        (S.IB_CONNECTIVITY_LOST, False),
    ],
)
def test_orders_are_accepted_only_when_ready_or_degraded(state: S, accepts: bool) -> None:
    machine = machine_in(state)
    assert machine.state is state
    assert machine.accepts_orders is accepts


def test_transition_is_an_immutable_value() -> None:
    transition = Transition(S.READY, S.DEGRADED, "farm down")
    assert transition == Transition(S.READY, S.DEGRADED, "farm down", False, False)
    with pytest.raises(AttributeError):
        transition.current = S.READY  # type: ignore[misc]


# -- nightly reset: 1100 / 1101 / 1102 --------------------------------------------


def test_1100_means_ib_connectivity_lost_and_stops_orders() -> None:
    machine = machine_in(S.READY)
    transition = machine.broker_error(1100, LOST)
    assert transition == Transition(S.READY, S.IB_CONNECTIVITY_LOST, f"IB 1100: {LOST}")
    assert not machine.accepts_orders


def test_repeated_1100_changes_nothing() -> None:
    machine = machine_in(S.IB_CONNECTIVITY_LOST)
    assert [machine.broker_error(1100, LOST) for _ in range(833)] == [None] * 833
    assert machine.state is S.IB_CONNECTIVITY_LOST


def test_1101_after_1100_restores_ready_and_asks_to_resubscribe() -> None:
    machine = machine_in(S.READY)
    machine.broker_error(1100, LOST)
    transition = machine.broker_error(1101, RESTORED_LOST)
    assert transition is not None
    assert (transition.previous, transition.current) == (S.IB_CONNECTIVITY_LOST, S.READY)
    assert transition.resubscribe
    assert not transition.reconnect
    assert "1101" in transition.reason
    assert machine.accepts_orders


def test_1102_after_1100_restores_ready_without_resubscribing() -> None:
    machine = machine_in(S.READY)
    machine.broker_error(1100, LOST)
    transition = machine.broker_error(1102, RESTORED_KEPT)
    assert transition is not None
    assert (transition.previous, transition.current) == (S.IB_CONNECTIVITY_LOST, S.READY)
    assert not transition.resubscribe


def test_recovery_lands_on_degraded_when_a_farm_is_still_down() -> None:
    machine = machine_in(S.DEGRADED)
    assert machine.broker_error(1100, LOST) is not None
    transition = machine.broker_error(1101, RESTORED_LOST)
    assert transition is not None
    assert (transition.previous, transition.current) == (S.IB_CONNECTIVITY_LOST, S.DEGRADED)
    assert transition.resubscribe


def test_1100_during_synchronisation_then_sync_completes_then_1102_is_ready() -> None:
    machine = machine_in(S.SYNCHRONISING)
    assert machine.broker_error(1100, LOST) is not None
    assert machine.state is S.IB_CONNECTIVITY_LOST
    assert machine.synchronised() is None  # recorded, but IB is still unreachable
    transition = machine.broker_error(1102, RESTORED_KEPT)
    assert transition is not None
    assert transition.current is S.READY


def test_recovery_before_synchronisation_completed_returns_to_synchronising() -> None:
    machine = machine_in(S.SYNCHRONISING)
    machine.broker_error(1100, LOST)
    transition = machine.broker_error(1101, RESTORED_LOST)
    assert transition is not None
    assert (transition.previous, transition.current) == (
        S.IB_CONNECTIVITY_LOST,
        S.SYNCHRONISING,
    )
    assert not machine.accepts_orders
    done = machine.synchronised()
    assert done is not None
    assert done.current is S.READY


def test_1100_while_connecting_is_remembered_until_synchronised() -> None:
    machine = machine_in(S.CONNECTING)
    assert machine.broker_error(1100, LOST) is None
    machine.socket_connected()
    transition = machine.synchronised()
    assert transition is not None
    assert transition.current is S.IB_CONNECTIVITY_LOST
    assert not machine.accepts_orders


def test_1101_while_ready_still_asks_to_resubscribe_without_changing_state() -> None:
    machine = machine_in(S.READY)
    transition = machine.broker_error(1101, RESTORED_LOST)
    assert transition == Transition(S.READY, S.READY, f"IB 1101: {RESTORED_LOST}", resubscribe=True)
    assert not transition.changed


def test_1102_while_ready_is_ignored() -> None:
    machine = machine_in(S.READY)
    assert machine.broker_error(1102, RESTORED_KEPT) is None
    assert machine.state is S.READY


# -- data farms ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message", "farm"),
    [
        (2103, MD_BROKEN, "market data:usfarm"),
        (2105, HMDS_BROKEN, "hmds:ushmds"),
        (2157, SECDEF_BROKEN, "sec-def:secdefil"),
    ],
)
def test_a_broken_farm_degrades_but_orders_still_flow(code: int, message: str, farm: str) -> None:
    machine = machine_in(S.READY)
    transition = machine.broker_error(code, message)
    assert transition is not None
    assert (transition.previous, transition.current) == (S.READY, S.DEGRADED)
    assert str(code) in transition.reason
    assert machine.farms_down == {farm}
    assert machine.accepts_orders


@pytest.mark.parametrize(
    ("down", "ok", "resubscribe"),
    [
        ((2103, MD_BROKEN), (2104, MD_OK), True),
        ((2105, HMDS_BROKEN), (2106, HMDS_OK), True),
        ((2157, SECDEF_BROKEN), (2158, SECDEF_OK), False),
    ],
)
def test_farm_back_ok_restores_ready(
    down: tuple[int, str], ok: tuple[int, str], resubscribe: bool
) -> None:
    machine = machine_in(S.READY)
    machine.broker_error(*down)
    transition = machine.broker_error(*ok)
    assert transition is not None
    assert (transition.previous, transition.current) == (S.DEGRADED, S.READY)
    assert transition.resubscribe is resubscribe
    assert machine.farms_down == frozenset()


def test_ready_only_once_every_broken_farm_is_ok() -> None:
    machine = machine_in(S.READY)
    machine.broker_error(2103, MD_BROKEN)
    assert machine.broker_error(2157, SECDEF_BROKEN) is None  # already degraded
    assert machine.broker_error(2103, MD2_BROKEN) is None
    assert machine.farms_down == {"market data:usfarm", "market data:eufarm", "sec-def:secdefil"}

    assert machine.broker_error(2158, SECDEF_OK) is None  # market data still down
    partial = machine.broker_error(2104, MD_OK)  # usfarm back, eufarm still down
    assert partial == Transition(S.DEGRADED, S.DEGRADED, f"IB 2104: {MD_OK}", resubscribe=True)
    assert machine.state is S.DEGRADED

    last = machine.broker_error(2104, MD2_OK)
    assert last is not None
    assert (last.previous, last.current) == (S.DEGRADED, S.READY)


def test_farm_ok_without_a_farm_name_clears_every_farm_of_that_kind() -> None:
    machine = machine_in(S.READY)
    machine.broker_error(2103, MD_BROKEN)
    machine.broker_error(2103, MD2_BROKEN)
    transition = machine.broker_error(2104, "Market data farm connection is OK")
    assert transition is not None
    assert transition.current is S.READY


def test_farm_ok_for_a_farm_never_down_while_ready_is_ignored() -> None:
    machine = machine_in(S.READY)
    assert machine.broker_error(2104, MD_OK) is None
    assert machine.broker_error(2106, HMDS_OK) is None
    assert machine.state is S.READY


def test_farm_down_while_synchronising_is_applied_when_synchronised() -> None:
    machine = machine_in(S.SYNCHRONISING)
    assert machine.broker_error(2103, MD_BROKEN) is None
    assert machine.state is S.SYNCHRONISING
    transition = machine.synchronised()
    assert transition is not None
    assert transition.current is S.DEGRADED


def test_farm_status_sent_while_connecting_counts() -> None:
    machine = machine_in(S.CONNECTING)
    machine.broker_error(2103, MD_BROKEN)
    machine.broker_error(2104, MD_OK)
    machine.broker_error(2157, SECDEF_BROKEN)
    machine.socket_connected()
    transition = machine.synchronised()
    assert transition is not None
    assert transition.current is S.DEGRADED
    assert machine.farms_down == {"sec-def:secdefil"}


@pytest.mark.parametrize("code", [2107, 2108, 2119])
def test_inactive_or_connecting_farm_notices_are_informational(code: int) -> None:
    machine = machine_in(S.READY)
    assert machine.broker_error(code, "farm is inactive but should be available") is None
    assert machine.state is S.READY


def test_farm_down_during_ib_outage_is_applied_on_recovery() -> None:
    machine = machine_in(S.IB_CONNECTIVITY_LOST)
    assert machine.broker_error(2103, MD_BROKEN) is None
    assert machine.state is S.IB_CONNECTIVITY_LOST
    transition = machine.broker_error(1102, RESTORED_KEPT)
    assert transition is not None
    assert transition.current is S.DEGRADED


# -- forced reconnects: 326, zombie, socket lost ---------------------------------


@pytest.mark.parametrize(
    "state", [S.CONNECTING, S.SYNCHRONISING, S.READY, S.DEGRADED, S.IB_CONNECTIVITY_LOST]
)
def test_326_client_id_in_use_disconnects_and_asks_to_reconnect(state: S) -> None:
    machine = machine_in(state)
    transition = machine.broker_error(326, "Unable to connect as the client id is already in use.")
    assert transition == Transition(state, S.DISCONNECTED, "client id in use", reconnect=True)
    assert machine.state is S.DISCONNECTED


@pytest.mark.parametrize("state", [S.SYNCHRONISING, S.READY, S.DEGRADED, S.IB_CONNECTIVITY_LOST])
def test_missed_heartbeat_is_a_zombie_to_reconnect(state: S) -> None:
    machine = machine_in(state)
    transition = machine.heartbeat_missed()
    assert transition == Transition(
        state, S.DISCONNECTED, "zombie: no answer to reqCurrentTime", reconnect=True
    )
    assert not machine.accepts_orders


@pytest.mark.parametrize("state", [S.DISCONNECTED, S.CONNECTING])
def test_missed_heartbeat_before_the_socket_is_up_is_ignored(state: S) -> None:
    machine = machine_in(state)
    assert machine.heartbeat_missed() is None
    assert machine.state is state


@pytest.mark.parametrize(
    "state", [S.CONNECTING, S.SYNCHRONISING, S.READY, S.DEGRADED, S.IB_CONNECTIVITY_LOST]
)
def test_socket_lost_from_any_state_disconnects_and_reconnects(state: S) -> None:
    machine = machine_in(state)
    transition = machine.disconnected("socket closed by peer")
    assert transition == Transition(state, S.DISCONNECTED, "socket closed by peer", reconnect=True)


def test_deliberate_disconnect_does_not_ask_to_reconnect() -> None:
    machine = machine_in(S.READY)
    transition = machine.disconnected("shutdown", reconnect=False)
    assert transition is not None
    assert transition.current is S.DISCONNECTED
    assert not transition.reconnect


def test_disconnected_twice_reports_once() -> None:
    machine = machine_in(S.READY)
    assert machine.disconnected("socket closed") is not None
    assert machine.disconnected("socket closed") is None


def test_a_reconnect_forgets_the_farms_and_outage_of_the_old_connection() -> None:
    machine = machine_in(S.DEGRADED)
    machine.broker_error(1100, LOST)
    machine.heartbeat_missed()
    assert machine.farms_down == frozenset()
    machine.connect_started()
    machine.socket_connected()
    transition = machine.synchronised()
    assert transition is not None
    assert transition.current is S.READY


def test_full_outage_cycle_publishes_the_expected_sequence() -> None:
    machine = ConnectionMachine()
    inputs = [
        machine.connect_started,
        machine.socket_connected,
        machine.synchronised,
        lambda: machine.broker_error(1100, LOST),
        machine.heartbeat_missed,
        machine.connect_started,
        lambda: machine.broker_error(326, "client id in use"),
        machine.connect_started,
        machine.socket_connected,
        machine.synchronised,
    ]
    states = [t.current for step in inputs if (t := step()) is not None]
    assert states == [
        S.CONNECTING,
        S.SYNCHRONISING,
        S.READY,
        S.IB_CONNECTIVITY_LOST,
        S.DISCONNECTED,
        S.CONNECTING,
        S.DISCONNECTED,
        S.CONNECTING,
        S.SYNCHRONISING,
        S.READY,
    ]


# -- inputs that make no sense in the current state ---------------------------------


@pytest.mark.parametrize(
    ("state", "step"),
    [
        (S.DISCONNECTED, "socket_connected"),
        (S.DISCONNECTED, "synchronised"),
        (S.CONNECTING, "connect_started"),
        (S.CONNECTING, "synchronised"),
        (S.SYNCHRONISING, "connect_started"),
        (S.SYNCHRONISING, "socket_connected"),
        (S.READY, "connect_started"),
        (S.READY, "socket_connected"),
        (S.READY, "synchronised"),
        (S.DEGRADED, "synchronised"),
        (S.IB_CONNECTIVITY_LOST, "socket_connected"),
    ],
)
def test_out_of_order_lifecycle_inputs_are_ignored(state: S, step: str) -> None:
    machine = machine_in(state)
    assert getattr(machine, step)() is None
    assert machine.state is state


@pytest.mark.parametrize("code", [1100, 1101, 1102, 2103, 2104, 326])
def test_broker_codes_while_disconnected_are_ignored(code: int) -> None:
    machine = ConnectionMachine()
    assert machine.broker_error(code, "late message from the old socket") is None
    assert machine.state is S.DISCONNECTED


@pytest.mark.parametrize("code", [100, 162, 200, 201, 202, 399, 2100, 2137, 10147, 99999])
def test_codes_that_do_not_drive_state_return_none(code: int) -> None:
    machine = machine_in(S.READY)
    assert machine.broker_error(code, "something") is None
    assert machine.state is S.READY


def test_reason_without_ib_text_names_the_code() -> None:
    machine = machine_in(S.READY)
    transition = machine.broker_error(1100, "  ")
    assert transition is not None
    assert transition.reason == "IB 1100"
