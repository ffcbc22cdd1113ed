"""IB error codes: the named sets that drive the connection state, and classify()."""

from __future__ import annotations

import pytest

from ibflow_gateway_bridge.domain import error_codes as ec
from ibflow_gateway_bridge.domain.error_codes import ErrorClass, classify


def test_named_sets_hold_the_documented_codes() -> None:
    assert {1100} == ec.CONNECTIVITY_LOST
    assert {1101} == ec.CONNECTIVITY_RESTORED_DATA_LOST
    assert {1102} == ec.CONNECTIVITY_RESTORED_DATA_KEPT
    assert {2103, 2105, 2157} == ec.FARM_DOWN
    assert {2107, 2108, 2119} == ec.FARM_INACTIVE_OR_CONNECTING
    assert {2104, 2106, 2158} == ec.FARM_OK
    assert {326} == ec.CLIENT_ID_IN_USE
    assert {100, 162} == ec.PACING
    assert {103, 104, 105, 110, 200, 201, 10147, 10148} <= ec.ORDER_REJECTIONS
    assert ec.CANCEL_REJECTIONS <= ec.ORDER_REJECTIONS


def test_sets_that_drive_state_do_not_overlap() -> None:
    driving = [
        ec.CONNECTIVITY_LOST,
        ec.CONNECTIVITY_RESTORED_DATA_LOST,
        ec.CONNECTIVITY_RESTORED_DATA_KEPT,
        ec.FARM_DOWN,
        ec.FARM_INACTIVE_OR_CONNECTING,
        ec.FARM_OK,
        ec.CLIENT_ID_IN_USE,
        ec.PACING,
        ec.ORDER_REJECTIONS,
        ec.REQUEST_ERRORS,
    ]
    total = sum(len(codes) for codes in driving)
    assert len(frozenset().union(*driving)) == total


def test_every_farm_code_belongs_to_exactly_one_farm_kind() -> None:
    kinds = [ec.MARKET_DATA_FARM, ec.HMDS_FARM, ec.SECDEF_FARM]
    for code in ec.FARM_DOWN | ec.FARM_OK | ec.FARM_INACTIVE_OR_CONNECTING:
        assert sum(code in kind for kind in kinds) == 1, code


def test_sets_are_immutable() -> None:
    assert isinstance(ec.FARM_DOWN, frozenset)
    assert isinstance(ec.ORDER_REJECTIONS, frozenset)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (1100, ErrorClass.CONNECTIVITY),
        (1101, ErrorClass.CONNECTIVITY),
        (1102, ErrorClass.CONNECTIVITY),
        (1300, ErrorClass.CONNECTIVITY),
        (502, ErrorClass.CONNECTIVITY),
        (504, ErrorClass.CONNECTIVITY),
        (2110, ErrorClass.CONNECTIVITY),  # in the 21xx warning range, named set wins
        (2103, ErrorClass.FARM),
        (2104, ErrorClass.FARM),
        (2105, ErrorClass.FARM),
        (2107, ErrorClass.FARM),
        (2119, ErrorClass.FARM),
        (2157, ErrorClass.FARM),
        (2158, ErrorClass.FARM),
        (326, ErrorClass.CLIENT_ID),
        (100, ErrorClass.PACING),
        (162, ErrorClass.PACING),
        (201, ErrorClass.ORDER),
        (200, ErrorClass.ORDER),
        (103, ErrorClass.ORDER),
        (202, ErrorClass.ORDER),
        (10148, ErrorClass.ORDER),
        (354, ErrorClass.REQUEST),
        (322, ErrorClass.REQUEST),
        (2100, ErrorClass.WARNING),
        (2137, ErrorClass.WARNING),
        (399, ErrorClass.WARNING),
        (10167, ErrorClass.WARNING),
        (0, ErrorClass.OTHER),
        (-1, ErrorClass.OTHER),
        (99999, ErrorClass.OTHER),
    ],
)
def test_classify_buckets_codes_for_the_errors_metric(code: int, expected: ErrorClass) -> None:
    assert classify(code) is expected


def test_error_class_values_are_metric_labels() -> None:
    assert [c.value for c in ErrorClass] == [
        "connectivity",
        "farm",
        "client_id",
        "pacing",
        "order",
        "request",
        "warning",
        "other",
    ]
