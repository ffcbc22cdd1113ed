"""``ibflow-gateway-sim``: run the IB Gateway simulator from the command line.

    ibflow-gateway-sim --host 127.0.0.1 --port 4002 [--seed N] [--config sim.yaml]
                       [--control-port 4010]

Serves the TWS API on ``--port`` and the HTTP control API (:mod:`.control`) on
``--control-port`` (default 4010, same host; ``0`` disables it). Logs to stderr; exits 0
on SIGTERM/SIGINT, 1 if a port cannot be bound, 2 for an invalid configuration.
Deliberately free of ibflow, NATS and PostgreSQL: the simulator stands in for IB
Gateway only.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from ibflow_gateway_sim.config import ConfigError, SimConfig, load_config
from ibflow_gateway_sim.control import ControlServer
from ibflow_gateway_sim.server import GatewaySimulator

log = logging.getLogger("ibflow_gateway_sim")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="ibflow-gateway-sim",
        description="IB Gateway simulator speaking the TWS socket protocol (server version 176).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=4002, help="TWS API port (default 4002)")
    parser.add_argument(
        "--seed", type=int, default=None, help="random seed for market data (overrides config)"
    )
    parser.add_argument("--config", type=Path, default=None, help="simulation scenario (YAML)")
    parser.add_argument(
        "--control-port",
        type=int,
        default=4010,
        help="HTTP control API port (default 4010; 0 disables it)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (default INFO)",
    )
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> SimConfig:
    """The configuration from ``--config`` (or defaults) with ``--seed`` applied."""
    config = load_config(args.config) if args.config is not None else SimConfig()
    return config.with_seed(args.seed)


async def serve(config: SimConfig, host: str, port: int, control_port: int) -> int:
    """Run until SIGTERM/SIGINT; return the exit status."""
    sim = GatewaySimulator(config)
    try:
        await sim.start(host, port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc)
        return 1
    control: ControlServer | None = None
    if control_port:
        control = ControlServer(sim)
        try:
            await control.start(host, control_port)
        except OSError as exc:
            log.error("cannot listen on %s:%d (control API): %s", host, control_port, exc)
            await sim.stop()
            return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        if control is not None:
            await control.stop()
        await sim.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Console script ``ibflow-gateway-sim``."""
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-8s %(name)s: %(message)s",
    )
    try:
        config = build_config(args)
    except ConfigError as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
    raise SystemExit(asyncio.run(serve(config, args.host, args.port, args.control_port)))
