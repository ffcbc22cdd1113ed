"""Read access to the ``portfolios`` table (owned by order-manager) for the bridge.

The bridge only reads the broker connection columns; cash, risk limits and trading
state belong to order-manager. Plain SQL over an asyncpg pool (or connection).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ibflow_gateway_bridge.domain.safety import check_live_allowed

__all__ = ["PortfolioConfig", "load_enabled_portfolios", "load_portfolio"]

_COLUMNS = """
    id, name, broker_host, broker_port, client_id, fallback_client_id,
    account, is_paper, allow_live, enabled
"""
_SELECT_ENABLED = f"SELECT {_COLUMNS} FROM portfolios WHERE enabled ORDER BY id"  # noqa: S608
_SELECT_ONE = f"SELECT {_COLUMNS} FROM portfolios WHERE id = $1"  # noqa: S608

Executor: TypeAlias = "asyncpg.Pool[Any] | asyncpg.Connection[Any] | PoolConnectionProxy[Any]"
"""What the loaders query through: a pool or a (pooled) connection."""


@dataclass(frozen=True, slots=True)
class PortfolioConfig:
    """How the bridge connects for one portfolio (a row of ``portfolios``).

    ``host``/``port`` are the table's ``broker_host``/``broker_port``;
    ``fallback_client_id`` is tried after error 326; ``account`` ``None`` means the
    Gateway's only account.
    """

    id: str
    name: str
    host: str
    port: int
    client_id: int
    fallback_client_id: int | None
    account: str | None
    is_paper: bool
    allow_live: bool
    enabled: bool

    def live_refusal(self, account: str | None = None) -> str | None:
        """Why this portfolio may not connect/trade (see :func:`check_live_allowed`).

        ``account`` overrides the configured one, e.g. with the account the Gateway
        reports once connected; ``None`` = allowed.
        """
        return check_live_allowed(
            self.port,
            account if account is not None else self.account,
            self.is_paper,
            self.allow_live,
        )

    @classmethod
    def from_record(cls, row: asyncpg.Record) -> PortfolioConfig:
        """Build from a row holding the columns the loaders select."""
        return cls(
            id=row["id"],
            name=row["name"],
            host=row["broker_host"],
            port=row["broker_port"],
            client_id=row["client_id"],
            fallback_client_id=row["fallback_client_id"],
            account=row["account"],
            is_paper=row["is_paper"],
            allow_live=row["allow_live"],
            enabled=row["enabled"],
        )


async def load_enabled_portfolios(pool: Executor) -> list[PortfolioConfig]:
    """Every enabled portfolio, ordered by id."""
    rows = await pool.fetch(_SELECT_ENABLED)
    return [PortfolioConfig.from_record(row) for row in rows]


async def load_portfolio(pool: Executor, portfolio_id: str) -> PortfolioConfig | None:
    """The portfolio ``portfolio_id`` whether enabled or not (check ``enabled``), or ``None``."""
    row = await pool.fetchrow(_SELECT_ONE, portfolio_id)
    return None if row is None else PortfolioConfig.from_record(row)
