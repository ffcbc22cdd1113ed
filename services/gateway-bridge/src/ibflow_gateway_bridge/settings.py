"""Settings of gateway-bridge: :class:`~ibflow.settings.CommonSettings` with its own defaults."""

from __future__ import annotations

from pydantic import Field

from ibflow.contracts.enums import GatewayType
from ibflow.settings import CommonSettings
from ibflow_gateway_bridge.supervisor import ConnectionTimings


class GatewayBridgeSettings(CommonSettings):
    """Environment of gateway-bridge (``IBFLOW_`` prefix).

    Metrics and health are served on port 9101 by default. Which gateways to connect to
    comes from the ``portfolios`` table, not from here; these are the connection timings
    (``IBFLOW_HEARTBEAT_INTERVAL`` …) and, optionally, what the gateway is
    (``IBFLOW_GATEWAY_TYPE=simulator``; by default told from the port).
    """

    service_name: str = Field(default="gateway-bridge", min_length=1)
    http_port: int = Field(default=9101, ge=0, le=65535)
    heartbeat_interval: float = Field(default=10.0, gt=0)
    heartbeat_timeout: float = Field(default=5.0, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    reconnect_base: float = Field(default=1.0, gt=0)
    reconnect_cap: float = Field(default=60.0, gt=0)
    gateway_type: GatewayType | None = None
    portfolio_reload_interval: float = Field(default=60.0, gt=0)
    """Re-read the portfolios table this often even without a ``PortfolioChanged``."""
    market_data_linger_seconds: float = Field(default=30.0, ge=0)
    """Keep a market data line nobody holds any more this long before ``cancelMktData``
    (``IBFLOW_MARKET_DATA_LINGER_SECONDS``; 0 cancels at once): a symbol released and
    subscribed again within it costs IB no message (IB allows 50 per second per
    connection, shared with the orders)."""

    def timings(self) -> ConnectionTimings:
        """The :class:`ConnectionTimings` these settings describe."""
        return ConnectionTimings(
            heartbeat_interval=self.heartbeat_interval,
            heartbeat_timeout=self.heartbeat_timeout,
            connect_timeout=self.connect_timeout,
            reconnect_base=self.reconnect_base,
            reconnect_cap=self.reconnect_cap,
        )
