"""``ibflow-migrate``: make a database and a NATS server ready for the services.

What the one-shot ``migrate`` service of ``docker-compose.yml`` runs before anything
else starts (``make run`` does the same through ``ibflow.testing.devstack``):

1. applies the migrations of ``ibflow.db`` and of every installed ``ibflow_*`` package
   that has a ``migrations`` directory (under the advisory lock of
   :func:`~ibflow.db.migrations.apply_migrations`, so it is safe to run twice);
2. provisions the JetStream streams (``IBFLOW_EVENTS``, ``IBFLOW_DLQ``);
3. with ``--demo-portfolio HOST:PORT`` only, creates the paper ``demo`` portfolio on a
   gateway-sim at that address and the simulator's instruments, unless they exist.

Settings come from the usual environment (``IBFLOW_DATABASE_URL``, ``IBFLOW_NATS_URL``,
``IBFLOW_NATS_CREDS``). Exit status 0 when everything is ready, 1 when a step failed
(the error is logged), 2 for invalid settings or arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import asyncpg

from ibflow.bus.connection import connect
from ibflow.bus.provision import provision
from ibflow.bus.subjects import ALL_STREAMS
from ibflow.db.migrations import apply_migrations
from ibflow.settings import CommonSettings, SettingsError

__all__ = ["main", "migration_packages", "prepare", "seed_demo_portfolio"]

log = logging.getLogger("ibflow.migrate")

DEMO_PORTFOLIO_SQL: Final = """
INSERT INTO portfolios (id, name, broker_host, broker_port, client_id, account, cash)
VALUES ('demo', 'Demo portfolio (gateway-sim)', $1, $2, 1, 'DU1234567', 1000000)
ON CONFLICT (id) DO NOTHING
"""

DEMO_INSTRUMENTS: Final = (
    ("AAPL", 265598, "NASDAQ"),
    ("MSFT", 272093, "NASDAQ"),
    ("SPY", 756733, "ARCA"),
    ("QQQ", 320227571, "NASDAQ"),
    ("NVDA", 4815747, "NASDAQ"),
    ("AMZN", 3691937, "NASDAQ"),
    ("TSLA", 76792991, "NASDAQ"),
    ("META", 107113386, "NASDAQ"),
    ("GOOGL", 208813719, "NASDAQ"),
    ("AMD", 4391, "NASDAQ"),
    ("JPM", 1520593, "NYSE"),
    ("IWM", 9579970, "ARCA"),
)
"""gateway-sim's built-in symbols (symbol, IB con id, primary exchange), all USD stocks."""

DEMO_INSTRUMENTS_SQL: Final = """
INSERT INTO instruments (symbol, con_id, currency, primary_exchange)
SELECT symbol, con_id, 'USD', exchange FROM unnest($1::text[], $2::bigint[], $3::text[])
    AS t(symbol, con_id, exchange)
ON CONFLICT (symbol) DO NOTHING
"""


def migration_packages() -> list[str]:
    """``ibflow.db`` first, then each installed ``ibflow_*`` package with a ``migrations`` dir."""
    packages = ["ibflow.db"]
    names = {
        re.sub(r"[-_.]+", "_", dist.metadata["Name"] or "").lower()
        for dist in importlib.metadata.distributions()
    }
    for module in sorted(name for name in names if name.startswith("ibflow_")):
        spec = importlib.util.find_spec(module)
        locations = spec.submodule_search_locations if spec is not None else None
        if locations and any((Path(loc) / "migrations").is_dir() for loc in locations):
            packages.append(module)
    return packages


async def seed_demo_portfolio(database_url: str, host: str, port: int) -> bool:
    """Create the paper ``demo`` portfolio on gateway-sim at ``host:port`` and the
    simulator's instruments unless they exist; False when there is no portfolios table."""
    conn = await asyncpg.connect(database_url)
    try:
        if await conn.fetchval("SELECT to_regclass('portfolios')") is None:
            return False
        await conn.execute(DEMO_PORTFOLIO_SQL, host, port)
        if await conn.fetchval("SELECT to_regclass('instruments')") is not None:
            symbols, con_ids, exchanges = zip(*DEMO_INSTRUMENTS, strict=True)
            await conn.execute(DEMO_INSTRUMENTS_SQL, list(symbols), list(con_ids), list(exchanges))
        return True
    finally:
        await conn.close()


async def prepare(settings: CommonSettings, demo_portfolio: tuple[str, int] | None = None) -> None:
    """Migrate, seed the demo portfolio when asked, provision the streams."""
    database_url = settings.database_url.get_secret_value()
    packages = migration_packages()
    applied = await apply_migrations(database_url, *packages)
    log.info(
        "migrations of %s: %s",
        ", ".join(packages),
        f"{len(applied)} applied" if applied else "up to date",
    )
    if demo_portfolio is not None:
        host, port = demo_portfolio
        if await seed_demo_portfolio(database_url, host, port):
            log.info("demo portfolio: 'demo' on gateway-sim %s:%d, client id 1", host, port)
        else:
            log.warning("no portfolios table (order-manager not installed): no demo portfolio")
    nc = await connect(
        settings.nats_url,
        name="ibflow-migrate",
        creds=settings.nats_creds,
        max_reconnect_attempts=0,
    )
    try:
        for result in await provision(nc.jetstream(), ALL_STREAMS):
            log.info("stream %s: %s", result.name, result.action)
    finally:
        await nc.close()


def _address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``ibflow-migrate``."""
    parser = argparse.ArgumentParser(
        prog="ibflow-migrate",
        description="Apply every ibflow migration and provision the JetStream streams "
        "(IBFLOW_DATABASE_URL, IBFLOW_NATS_URL, IBFLOW_NATS_CREDS).",
    )
    parser.add_argument(
        "--demo-portfolio",
        type=_address,
        metavar="HOST:PORT",
        help="also create the paper 'demo' portfolio on a gateway-sim at HOST:PORT",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        settings = CommonSettings.load(service_name="migrate")
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        asyncio.run(prepare(settings, args.demo_portfolio))
    except Exception:
        log.exception("migrate failed")
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
