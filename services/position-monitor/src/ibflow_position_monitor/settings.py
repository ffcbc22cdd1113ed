"""Settings of position-monitor: :class:`~ibflow.settings.CommonSettings` with its own defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ibflow.settings import CommonSettings
from ibflow_position_monitor.domain import CloseOutStyle, PriceSource


class PositionMonitorSettings(CommonSettings):
    """Environment of position-monitor (``IBFLOW_`` prefix).

    Metrics and health are served on port 9103 by default.
    """

    service_name: str = Field(default="position-monitor", min_length=1)
    http_port: int = Field(default=9103, ge=0, le=65535)
    price_source: PriceSource = PriceSource.LAST
    """Which price stop and target are compared with: ``last`` trade, or ``bid_ask`` (a
    long watches the bid, a short the ask)."""
    stale_after: float = Field(default=5.0, gt=0)
    """Seconds without a tick after which a symbol's quote is stale: never acted on, and
    a fresh quote is requested."""
    exit_mode: Literal["monitor"] = "monitor"
    """How stops and targets are enforced. Only ``monitor`` (this service watches every
    tick and sends market exits) is implemented; ``broker_bracket`` is refused at start."""
    close_out_style: CloseOutStyle = CloseOutStyle.MARKET
    """Close-out exits: ``market`` orders or ``marketable_limit`` (through the quote)."""
    close_out_offset_ticks: int = Field(default=5, ge=0, le=1000)
    """How many ticks through the quote a close-out marketable limit is placed."""
    order_timeout: float = Field(default=15.0, gt=0)
    """Seconds to wait for the order-manager's answer to an exit or a cancel."""
    exit_resend_after: float = Field(default=10.0, gt=0)
    """An exit recorded but not acknowledged by the order-manager this long is re-sent
    (same client order id and terms: the order-manager keeps the first)."""
    refresh_interval: float = Field(default=2.0, gt=0)
    """Seconds between re-reads of the open positions (other replicas' changes) and
    re-sends of unacknowledged exits."""
    lease_renew_interval: float = Field(default=20.0, gt=0)
    """Seconds between renewals of the market data leases (the bridge's lease is 60 s)."""
    marks_interval: float = Field(default=1.0, gt=0)
    """Marks and unrealized P&L are published at most once per portfolio this often."""
    reconcile_settle: float = Field(default=2.0, ge=0)
    """Seconds a snapshot that shows drift is held back once, so fills in flight land
    before anything is reported or adopted."""
    command_concurrency: int = Field(default=4, ge=1, le=64)
    """Commands of a kind handled at once by this replica."""
