"""ibflow-gateway-sim: placeholder until the TWS protocol simulator lands.

Accepts TCP connections on ``--host:--port``, logs that the protocol is not
implemented and closes them. Exits 0 on SIGTERM/SIGINT. Deliberately free of
ibflow, NATS and PostgreSQL: the simulator stands in for IB Gateway only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("ibflow_gateway_sim")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (the full simulator keeps the same ones)."""
    parser = argparse.ArgumentParser(
        prog="ibflow-gateway-sim",
        description="IB Gateway simulator speaking the TWS socket protocol (stub).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=4002, help="TWS API port (default 4002)")
    parser.add_argument("--seed", type=int, default=None, help="random seed for market data")
    parser.add_argument("--config", type=Path, default=None, help="simulation scenario (YAML)")
    parser.add_argument(
        "--control-port", type=int, default=4010, help="HTTP control port (not served yet)"
    )
    return parser.parse_args(argv)


async def _handle(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    peer = writer.get_extra_info("peername")
    log.warning("gateway-sim protocol not implemented yet; closing connection from %s", peer)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def serve(host: str, port: int) -> int:
    """Listen until SIGTERM/SIGINT; return the exit status."""
    try:
        server = await asyncio.start_server(_handle, host, port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = ", ".join(f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in server.sockets)
    log.info("gateway-sim (stub) listening on %s", bound)
    async with server:
        await stop.wait()
    log.info("gateway-sim stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Console script ``ibflow-gateway-sim``."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-8s %(name)s: %(message)s",
    )
    if args.config is not None or args.seed is not None:
        log.info("stub ignores --seed/--config (seed=%s, config=%s)", args.seed, args.config)
    raise SystemExit(asyncio.run(serve(args.host, args.port)))
