"""The JSON encoding ibflow.db uses for json/jsonb columns (no database needed)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal

import pytest

from ibflow.db import json_dumps, json_loads


def test_decimal_is_written_as_an_exact_string() -> None:
    assert json_dumps({"px": Decimal("0.10"), "q": Decimal("-1E+3")}) == '{"px":"0.10","q":"-1E+3"}'
    assert Decimal(json_loads(json_dumps(Decimal("189.123456789")))) == Decimal("189.123456789")


def test_datetimes_and_uuids_are_written_as_iso_and_canonical_strings() -> None:
    value = {
        "aware": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "naive": dt.datetime(2024, 1, 2, 3, 4, 5, 600000),
        "day": dt.date(2024, 1, 2),
        "time": dt.time(9, 30),
        "id": uuid.UUID(int=1),
    }
    assert json.loads(json_dumps(value)) == {
        "aware": "2024-01-02T03:04:05+00:00",
        "naive": "2024-01-02T03:04:05.600000",
        "day": "2024-01-02",
        "time": "09:30:00",
        "id": "00000000-0000-0000-0000-000000000001",
    }


def test_plain_values_round_trip() -> None:
    value = {"a": [1, 2.5, None, True, "é"], "b": {"c": {}}}
    assert json_loads(json_dumps(value)) == value


def test_unknown_types_and_nan_are_refused() -> None:
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        json_dumps({"s": {1}})
    with pytest.raises(ValueError, match="Out of range float"):
        json_dumps(float("nan"))
