"""Settings of order-manager: :class:`~ibflow.settings.CommonSettings` with its own defaults."""

from __future__ import annotations

from pydantic import Field

from ibflow.settings import CommonSettings


class OrderManagerSettings(CommonSettings):
    """Environment of order-manager (``IBFLOW_`` prefix).

    Metrics and health are served on port 9102 by default.
    """

    service_name: str = Field(default="order-manager", min_length=1)
    http_port: int = Field(default=9102, ge=0, le=65535)
    broker_timeout: float = Field(default=10.0, gt=0)
    """Seconds to wait for the bridge's answer to a broker command (then: ``UNKNOWN``)."""
    recovery_interval: float = Field(default=30.0, gt=0)
    """Seconds between passes resolving ``PENDING``/``UNKNOWN`` orders with the broker."""
    command_concurrency: int = Field(default=8, ge=1, le=64)
    """Commands of a kind handled at once by this replica."""
    strategies: list[str] = Field(default_factory=list)
    """Strategies asked for recommendations at the morning entry, as ``module:attr`` import
    paths (``IBFLOW_STRATEGIES='["my_pkg.strategies:Momentum"]'``; see ``strategy.py``)."""
    fact_batch: int = Field(default=200, ge=1, le=1000)
    """Most broker facts (statuses, executions, commissions) booked in one transaction:
    the consumer books whatever one fetch returns, up to this many."""
    resend_window: float = Field(default=60.0, gt=0)
    """Seconds a ``PENDING`` order is left to its own submit before recovery asks the
    broker about it."""
    unconfirmed_after: float = Field(default=10.0, gt=0)
    """Seconds an order the bridge accepted may go without any fact from IB (no status,
    no fill) before recovery asks IB for it: one written into a connection that died
    never reached IB, and is then rejected and its cash released."""
