"""The gateway-bridge's latest state per portfolio, from its JetStream KV bucket.

The bridge keeps ``connection.<portfolio>`` (the last ``GatewayConnectionChanged``),
``account.<portfolio>`` (a list of ``AccountValuesReported``, one per account) and
``positions.<portfolio>`` (a list of ``BrokerPositionReported``) in
:data:`BRIDGE_STATE_BUCKET`. A missing bucket or key is *not known*, never "empty";
callers decide what that means (a ready connection whose snapshot listed no position
stores no positions key: that one is flat).
"""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from typing import Final

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from ibflow.contracts import AccountValuesReported, GatewayConnectionChanged

log = logging.getLogger("ibflow.api.bridge_state")

BRIDGE_STATE_BUCKET: Final = "IBFLOW_BRIDGE_STATE"
"""The bridge's KV bucket (``ibflow_gateway_bridge.supervisor.STATE_BUCKET``)."""


class BrokerHolding(BaseModel):
    """The fields of a stored ``BrokerPositionReported`` the api shows, read tolerantly:
    validating 100 whole envelopes (ids, two timestamps through Python validators) per
    ``GET /positions`` cost more than the rest of the request."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    account_id: str
    con_id: int
    symbol: str
    position: Decimal
    avg_cost: Decimal
    ts_event: dt.datetime


_ACCOUNTS: Final = TypeAdapter(list[AccountValuesReported])
_POSITIONS: Final = TypeAdapter(list[BrokerHolding])


class BridgeStateUnavailable(Exception):  # noqa: N818 - a condition, not a bug
    """The bucket could not be read (NATS down or slow): the state is unknown."""


class BridgeState:
    """Reads of the bridge's KV bucket."""

    def __init__(self, nc: NatsClient) -> None:
        self._nc = nc
        self._kv: KeyValue | None = None

    async def _get(self, key: str) -> bytes | None:
        try:
            if self._kv is None:
                self._kv = await self._nc.jetstream().key_value(BRIDGE_STATE_BUCKET)
            entry = await self._kv.get(key)
        except (nats.js.errors.BucketNotFoundError, nats.js.errors.KeyNotFoundError):
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise BridgeStateUnavailable(f"bridge state not readable: {exc!r}") from exc
        return entry.value

    async def connection(self, portfolio_id: str) -> GatewayConnectionChanged | None:
        """The portfolio's last connection state, if the bridge stored one."""
        data = await self._get(f"connection.{portfolio_id}")
        if not data:
            return None
        try:
            return GatewayConnectionChanged.model_validate_json(data)
        except ValidationError as exc:
            log.warning("unreadable connection state of %s: %s", portfolio_id, exc)
            return None

    async def accounts(self, portfolio_id: str) -> list[AccountValuesReported] | None:
        """The portfolio's latest account values per account, if stored."""
        data = await self._get(f"account.{portfolio_id}")
        if not data:
            return None
        try:
            return _ACCOUNTS.validate_json(data)
        except ValidationError as exc:
            log.warning("unreadable account state of %s: %s", portfolio_id, exc)
            return None

    async def positions(self, portfolio_id: str) -> list[BrokerHolding] | None:
        """The portfolio's latest broker positions, if stored (zero holdings included)."""
        data = await self._get(f"positions.{portfolio_id}")
        if not data:
            return None
        try:
            return _POSITIONS.validate_json(data)
        except ValidationError as exc:
            log.warning("unreadable positions state of %s: %s", portfolio_id, exc)
            return None
