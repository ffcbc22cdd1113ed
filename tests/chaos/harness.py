"""The chaos harness: a whole ibflow stack of real processes, faults, and the books check.

Each scenario gets its OWN nats-server and PostgreSQL (fixed ports, data on disk under
the test's tmp dir) so that it can kill and restart them; gateway-sim runs in the test
process (its engine is the broker's truth the books are checked against); every ibflow
service runs as a SUBPROCESS (``python -m ibflow_<name>``) so that a crash is a real
``SIGKILL``. Every process started here dies with the test, pass or fail: services are
stopped in ``finally`` and also carry ``PR_SET_PDEATHSIG`` (killed if pytest dies).

Generalised from ``services/order-manager/tests/integration/test_crash_and_replicas.py``
(book checks, settle waits, subprocess management).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import shutil
import signal
import struct
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import nats
from nats.aio.client import Client as NatsClient
from nats.js.errors import BucketNotFoundError, KeyNotFoundError

from ibflow.bus import request, subjects
from ibflow.bus.errors import RemoteError, RequestError
from ibflow.contracts import (
    CommandAccepted,
    OrderPurpose,
    OrderSide,
    OrderType,
    SubmitOrder,
)
from ibflow.db import apply_migrations
from ibflow.testing.embedded import FAST_PG_SETTINGS, NatsServer, PostgresServer, free_port
from ibflow_gateway_bridge.supervisor import STATE_BUCKET, state_key
from ibflow_gateway_sim.config import SimConfig
from ibflow_gateway_sim.server import GatewaySimulator

ACCOUNT = "DU1234567"
"""The burst portfolio's account at the simulator."""
PORTFOLIO = "chaos"
CLIENT_ID = 51
POS_ACCOUNT = "DU7654321"
"""The account of the position portfolio (position-monitor scenarios)."""
POS_PORTFOLIO = "pos"
POS_CLIENT_ID = 52
# frozen prices (the market moves only when a scenario says so; MKT buys fill at the
# ask, sells at the bid)
PRICES = {
    "AAPL": Decimal("190.00"),
    "MSFT": Decimal("410.00"),
    "GOOGL": Decimal("150.00"),
    "AMZN": Decimal("180.00"),
}
POSITION_SYMBOLS = ("SPY", "QQQ", "NVDA", "TSLA", "META", "AMD", "JPM", "IWM")
START_CASH = Decimal(1_000_000)
TRANSIENT = frozenset({"internal", "timeout", "not_ready"})
"""Error replies a well-behaved client answers by re-sending the same id."""
READY_LINE = re.compile(r" ready \(http port (\d+)\)")

MODULES = {
    "gateway-bridge": "ibflow_gateway_bridge",
    "order-manager": "ibflow_order_manager",
    "position-monitor": "ibflow_position_monitor",
    "scheduler": "ibflow_scheduler",
}
SERVICE_ENV: dict[str, dict[str, str]] = {
    "gateway-bridge": {
        "IBFLOW_GATEWAY_TYPE": "simulator",
        "IBFLOW_HEARTBEAT_INTERVAL": "1",
        "IBFLOW_HEARTBEAT_TIMEOUT": "2",
        "IBFLOW_RECONNECT_BASE": "0.5",
        "IBFLOW_RECONNECT_CAP": "2",
        "IBFLOW_CONNECT_TIMEOUT": "5",
        "IBFLOW_PORTFOLIO_RELOAD_INTERVAL": "5",
    },
    "order-manager": {"IBFLOW_RECOVERY_INTERVAL": "0.5"},
    "position-monitor": {
        "IBFLOW_STALE_AFTER": "1.5",
        "IBFLOW_REFRESH_INTERVAL": "0.5",
        "IBFLOW_EXIT_RESEND_AFTER": "3",
        "IBFLOW_MARKS_INTERVAL": "0.5",
        "IBFLOW_RECONCILE_SETTLE": "0.5",
    },
    "scheduler": {"IBFLOW_LEASE_TTL_SECONDS": "2", "IBFLOW_LEASE_RENEW_SECONDS": "0.5"},
}


# ---------------------------------------------------------------------- waiting


async def wait_for(
    condition: Callable[[], Any], within: float = 30.0, what: str = "condition"
) -> None:
    """Await ``condition()`` (sync or async) until truthy; AssertionError after ``within``."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {within}s")
        await asyncio.sleep(0.1)


# ---------------------------------------------------------------------- processes


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


class ServiceProcess:
    """One ibflow service as a subprocess (``python -m ibflow_<name>``); output to a log."""

    def __init__(self, service: str, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.service = service
        self.name = name
        self.env = env
        self.log_dir = log_dir
        self.logs: list[Path] = []
        self.proc: asyncio.subprocess.Process | None = None
        self.http_port: int | None = None
        self.kills = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, within: float = 60.0, wait_ready: bool = True) -> float:
        """Start a new process (a restart keeps the old log); seconds until it is ready."""
        started = time.monotonic()
        log = self.log_dir / f"{self.name}-{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                MODULES[self.service],
                env=self.env,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        if not wait_ready:
            return 0.0
        deadline = started + within
        while time.monotonic() < deadline:
            match = READY_LINE.search(log.read_text(errors="replace"))
            if match:
                self.http_port = int(match.group(1))
                return time.monotonic() - started
            if not self.alive:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}")
            await asyncio.sleep(0.1)
        raise AssertionError(f"{self.name} not ready within {within}s")

    async def kill9(self) -> None:
        """``kill -9``: no shutdown, no drain, no ack of anything in flight."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        await asyncio.wait_for(self.proc.wait(), 10)
        self.kills += 1

    async def stop(self) -> None:
        """SIGTERM (graceful), SIGKILL if it does not exit in time; idempotent."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 10)

    def log_text(self) -> str:
        return "\n".join(log.read_text(errors="replace") for log in self.logs if log.exists())

    def dump(self, lines: int = 80) -> None:
        for log in self.logs:
            text = log.read_text(errors="replace").splitlines() if log.exists() else []
            print(f"----- {log.name} (last {lines} of {len(text)} lines) -----")
            print("\n".join(text[-lines:]))

    async def metrics(self) -> str:
        """This process's ``/metrics`` text."""
        assert self.http_port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", self.http_port)
        writer.write(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        await writer.drain()
        body = (await reader.read()).decode()
        writer.close()
        return body

    async def metric(self, name: str, labels: str = "") -> Decimal:
        """Sum of the samples of ``name`` whose labels contain ``labels``."""
        total = Decimal(0)
        for line in (await self.metrics()).splitlines():
            if (
                line.startswith(name)
                and line[len(name) : len(name) + 1] in ("{", " ")
                and labels in line
            ):
                total += Decimal(line.rsplit(" ", 1)[1])
        return total


class Infra:
    """This scenario's own nats-server and PostgreSQL, on fixed ports, data on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nats_port = free_port()
        self.pg_port = free_port()
        self.nats: NatsServer | None = None
        self.pg: PostgresServer | None = None

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/ibflow"

    def start_nats(self) -> None:
        # started from the event loop's thread: PR_SET_PDEATHSIG follows the thread
        self.nats = NatsServer.start(self.root / "nats", port=self.nats_port)

    def kill_nats(self) -> None:
        """``kill -9`` of nats-server (JetStream data stays on disk)."""
        assert self.nats is not None
        self.nats.process.kill()
        self.nats.process.wait(10)

    def start_postgres(self) -> None:
        self.pg = PostgresServer.start(
            self.root / "pg", port=self.pg_port, settings=FAST_PG_SETTINGS
        )

    def stop_postgres(self) -> None:
        """PostgreSQL down (fast shutdown: every connection is cut)."""
        assert self.pg is not None
        self.pg.stop()

    def stop(self) -> None:
        try:
            if self.nats is not None:
                self.nats.stop()
        finally:
            if self.pg is not None:
                self.pg.stop()


# ---------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """Handles on a running chaos stack."""

    infra: Infra
    sim: GatewaySimulator
    nc: NatsClient
    log_dir: Path
    env: dict[str, str]
    processes: list[ServiceProcess] = field(default_factory=list)
    start_cash: Decimal = START_CASH

    @property
    def database_url(self) -> str:
        return self.infra.database_url

    def process(self, service: str, name: str | None = None) -> ServiceProcess:
        """A (not yet started) subprocess of ``service``, stopped with the stack."""
        env = {**self.env, **SERVICE_ENV.get(service, {})}
        proc = ServiceProcess(service, name or service, env, self.log_dir)
        self.processes.append(proc)
        return proc

    @contextlib.asynccontextmanager
    async def db(self) -> AsyncIterator[asyncpg.Connection[Any]]:
        """A fresh connection (survives a PostgreSQL restart between two checks)."""
        conn = await asyncpg.connect(self.database_url, timeout=10)
        try:
            yield conn
        finally:
            await conn.close()

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self.db() as conn:
            return list(await conn.fetch(sql, *args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self.db() as conn:
            return await conn.fetchval(sql, *args)

    # the broker's books (the simulator's own engine)

    def broker_state(self, account: str = ACCOUNT) -> dict[str, Any]:
        return self.sim.faults.account_state(account)

    def broker_orders(self, account: str = ACCOUNT) -> list[Any]:
        engine = self.sim.engine
        return [
            o for o in [*engine.open_orders(), *engine.completed_orders()] if o.account == account
        ]

    def broker_fills(self, account: str = ACCOUNT) -> list[Any]:
        return list(self.sim.engine.executions(account=account))

    def broker_positions(self, account: str = ACCOUNT) -> dict[str, Decimal]:
        return {
            p["symbol"]: Decimal(p["position"]) for p in self.broker_state(account)["positions"]
        }

    async def bridge_ready(self, portfolios: Iterable[str] = (PORTFOLIO,)) -> bool:
        try:
            kv = await self.nc.jetstream().key_value(STATE_BUCKET)
            for portfolio in portfolios:
                entry = await kv.get(state_key(portfolio))
                if entry.value is None or b'"state":"ready"' not in entry.value:
                    return False
        except (BucketNotFoundError, KeyNotFoundError):
            return False
        except Exception:  # NATS down or restarting: not ready
            return False
        return True


async def _seed(database_url: str, sim: GatewaySimulator, with_positions: bool) -> None:
    await apply_migrations(
        database_url, "ibflow.db", "ibflow_order_manager", "ibflow_position_monitor"
    )
    db = await asyncpg.connect(database_url)
    try:
        portfolios = [(PORTFOLIO, CLIENT_ID, ACCOUNT)]
        if with_positions:
            portfolios.append((POS_PORTFOLIO, POS_CLIENT_ID, POS_ACCOUNT))
        for portfolio, client_id, account in portfolios:
            await db.execute(
                "INSERT INTO portfolios (id, name, broker_port, client_id, account, cash)"
                " VALUES ($1, $1, $2, $3, $4, $5)",
                portfolio,
                sim.port,
                client_id,
                account,
                START_CASH,
            )
        await db.executemany(
            "INSERT INTO instruments (symbol, currency, primary_exchange)"
            " VALUES ($1, 'USD', 'NASDAQ')",
            [(s,) for s in [*PRICES, *POSITION_SYMBOLS]],
        )
    finally:
        await db.close()


@contextlib.asynccontextmanager
async def chaos_stack(
    tmp_path: Path,
    *,
    sim_config: dict[str, Any] | None = None,
    with_positions: bool = False,
) -> AsyncIterator[Stack]:
    """Own nats-server + PostgreSQL, gateway-sim in-process (frozen market, one or two
    accounts), the database migrated and seeded. Services are started by the scenario
    (``stack.process(...)``); all are stopped at the end, their logs (in ``tmp_path``)
    printed on failure.

    The servers' data lives in a ``mkdtemp`` directory, not under ``tmp_path``: when
    tests run as root PostgreSQL runs as another user, and every pytest session that
    starts (other runs on the machine too) takes the group/other bits off
    ``/tmp/pytest-of-root``, which would lock it out of its own data mid-scenario."""
    infra = Infra(Path(tempfile.mkdtemp(prefix="ibflow-chaos-")))
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IBFLOW_")}
    env.update(
        IBFLOW_NATS_URL=infra.nats_url,
        IBFLOW_DATABASE_URL=infra.database_url,
        IBFLOW_HTTP_PORT="0",
        IBFLOW_LOG_FORMAT="text",
        IBFLOW_LOG_LEVEL="INFO",
        IBFLOW_SHUTDOWN_GRACE_SECONDS="5",
        PYTHONUNBUFFERED="1",
    )
    sim: GatewaySimulator | None = None
    nc: NatsClient | None = None
    stack: Stack | None = None
    try:
        infra.start_nats()
        infra.start_postgres()
        accounts = [{"id": ACCOUNT, "starting_cash": str(START_CASH)}]
        if with_positions:
            accounts.append({"id": POS_ACCOUNT, "starting_cash": str(START_CASH)})
        config = SimConfig.model_validate(
            {"accounts": accounts, "market": {"auto_advance": False}, **(sim_config or {})}
        ).with_seed(5)
        sim = GatewaySimulator(config)
        await sim.start("127.0.0.1", 0)
        sim.faults.freeze(True)
        for symbol, price in PRICES.items():
            sim.faults.set_price(symbol, price)
        for symbol in POSITION_SYMBOLS:
            sim.faults.set_price(symbol, Decimal(100))
        await _seed(infra.database_url, sim, with_positions)
        nc = await nats.connect(infra.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.25)
        stack = Stack(infra, sim, nc, log_dir, env)
        yield stack
    except BaseException:
        print(f"chaos logs kept in {log_dir}")
        for proc in stack.processes if stack else []:
            proc.dump()
        raise
    finally:
        try:
            for proc in stack.processes if stack else []:
                await proc.stop()
            if nc is not None:
                with contextlib.suppress(Exception):
                    await nc.close()
            if sim is not None:
                await sim.stop()
        finally:
            infra.stop()
            shutil.rmtree(infra.root, ignore_errors=True)


async def start_services(
    stack: Stack, *services: str, portfolios: Iterable[str] = (PORTFOLIO,)
) -> dict[str, ServiceProcess]:
    """Start one process of each service (the bridge first) and wait for the bridge's
    connections to be ready."""
    procs = {service: stack.process(service) for service in services}
    if "gateway-bridge" in procs:
        await procs["gateway-bridge"].start()
    await asyncio.gather(*(p.start() for s, p in procs.items() if s != "gateway-bridge"))
    if "gateway-bridge" in procs:
        await wait_for(lambda: stack.bridge_ready(portfolios), within=60, what="bridge ready")
    return procs


# ---------------------------------------------------------------------- the burst


def submit_command(coid: str, i: int, quantity: Decimal) -> SubmitOrder:
    """MKT order ``i``: four symbols in turn, four buys then four sells."""
    symbol = list(PRICES)[i % len(PRICES)]
    side = OrderSide.BUY if (i // len(PRICES)) % 2 == 0 else OrderSide.SELL
    return SubmitOrder(
        portfolio_id=PORTFOLIO,
        client_order_id=coid,
        symbol=symbol,
        side=side,
        order_type=OrderType.MKT,
        quantity=quantity,
        reference_price=PRICES[symbol],
        purpose=OrderPurpose.MANUAL,
        requested_by="user:chaos",
    )


@dataclass
class Burst:
    """What a burst sent and what it was told."""

    coids: list[str]
    replies: dict[str, CommandAccepted] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    transient: dict[str, str] = field(default_factory=dict)
    """Error replies that decided nothing (re-sent): the last one per id."""
    attempts: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def answered(self) -> int:
        return len(self.replies) + len(self.refused)


async def run_burst(
    stack: Stack,
    total: int,
    *,
    in_flight: int = 40,
    prefix: str = "burst",
    faults: Iterable[tuple[int, Callable[[], Awaitable[None]]]] = (),
    request_timeout: float = 5.0,
) -> Burst:
    """``total`` MKT orders through the order-manager, ``in_flight`` at once, by
    well-behaved clients that re-send the SAME client order id until answered. Each
    ``(n, fault)`` runs ``fault()`` once ``n`` orders were answered (concurrently with
    the rest of the burst); the burst returns when every order and every fault is done."""
    burst = Burst([f"{prefix}-{i:04d}" for i in range(total)])
    commands = {
        coid: submit_command(coid, i, Decimal(1 + i % 3)) for i, coid in enumerate(burst.coids)
    }
    queue: asyncio.Queue[str] = asyncio.Queue()
    for coid in burst.coids:
        queue.put_nowait(coid)

    async def client() -> None:
        while not queue.empty():
            coid = queue.get_nowait()
            while True:
                burst.attempts[coid] += 1
                try:
                    burst.replies[coid] = await request(
                        stack.nc,
                        subjects.SUBMIT_ORDER,
                        commands[coid],
                        CommandAccepted,
                        timeout=request_timeout,
                    )
                    break
                except RemoteError as exc:
                    if exc.code in TRANSIENT:  # nothing decided: ask again, same id
                        burst.transient[coid] = f"{exc.code}: {exc.message}"
                        await asyncio.sleep(0.25)
                        continue
                    burst.refused[coid] = f"{exc.code}: {exc.message}"
                    break
                except (RequestError, Exception):  # timeout, no replica, NATS down
                    await asyncio.sleep(0.25)

    async def inject(after: int, fault: Callable[[], Awaitable[None]]) -> None:
        await wait_for(lambda: burst.answered >= after, within=300, what=f"{after} answers")
        await fault()

    began = time.monotonic()
    await asyncio.gather(*(inject(n, f) for n, f in faults), *(client() for _ in range(in_flight)))
    burst.seconds = time.monotonic() - began
    return burst


# ---------------------------------------------------------------------- settling


async def consumer_lag(stack: Stack, durables: Iterable[str]) -> dict[str, tuple[int, int]]:
    """(pending, ack pending) of durable consumers on ``IBFLOW_EVENTS``."""
    js = stack.nc.jetstream()
    lag = {}
    for durable in durables:
        try:
            info = await js.consumer_info("IBFLOW_EVENTS", durable)
            lag[durable] = (info.num_pending or 0, info.num_ack_pending or 0)
        except Exception as exc:
            lag[durable] = (-1, -1)
            del exc
    return lag


async def unsettled(stack: Stack, account: str = ACCOUNT, portfolio: str = PORTFOLIO) -> str | None:
    """What is still to happen for ``portfolio`` (``None``: nothing): a PENDING/UNKNOWN
    order, a working order at the broker, an execution or commission not booked, cash
    not the broker's."""
    working = [o for o in stack.sim.engine.open_orders() if o.account == account]
    try:
        async with stack.db() as db:
            unresolved = await db.fetch(
                "SELECT client_order_id, status FROM orders"
                " WHERE portfolio_id = $1 AND status IN ('PENDING', 'UNKNOWN')",
                portfolio,
            )
            rows = await db.fetchval(
                "SELECT count(*) FROM executions e JOIN orders o USING (client_order_id)"
                " WHERE o.portfolio_id = $1",
                portfolio,
            )
            booked = await db.fetchval(
                "SELECT count(*) FROM executions e JOIN orders o USING (client_order_id)"
                " WHERE o.portfolio_id = $1 AND e.commission IS NOT NULL",
                portfolio,
            )
            cash = await db.fetchval("SELECT cash FROM portfolios WHERE id = $1", portfolio)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        return f"database not answering: {exc!r}"
    fills = len(stack.broker_fills(account))
    broker_cash = Decimal(stack.broker_state(account)["cash"])
    if not working and not unresolved and rows == fills == booked and cash == broker_cash:
        return None
    return (
        f"{len(working)} working at the broker; {len(unresolved)} unresolved"
        f" {[tuple(r) for r in unresolved[:5]]}; {rows}/{fills} executions booked,"
        f" {booked} with commission; cash {cash} vs broker {broker_cash}"
    )


async def wait_settled(
    stack: Stack,
    within: float = 120.0,
    extra: Callable[[], Awaitable[str | None]] | None = None,
    account: str = ACCOUNT,
    portfolio: str = PORTFOLIO,
) -> None:
    """Wait until nothing is left to happen, twice 1 s apart; AssertionError naming
    what is left."""
    deadline = time.monotonic() + within
    quiet = 0
    while quiet < 2:
        left = await unsettled(stack, account, portfolio)
        if left is None and extra is not None:
            left = await extra()
        if left is None:
            quiet += 1
            await asyncio.sleep(1.0)
            continue
        quiet = 0
        if time.monotonic() > deadline:
            raise AssertionError(f"not settled within {within}s: {left}")
        await asyncio.sleep(0.3)


# ---------------------------------------------------------------------- the books

WORKING = frozenset({"SUBMITTED", "PARTIALLY_FILLED", "CANCEL_REQUESTED"})
LOST_AT_THE_BROKER = (
    "an order the gateway-bridge accepted (placeOrder written to the socket) but the"
    " gateway never processed (the connection dropped, or a zombie gateway, first) must"
    " not stay SUBMITTED with its cash reserved: the order-manager's recovery asks IB for"
    " orders without any broker fact after IBFLOW_UNCONFIRMED_AFTER and rejects the absent"
)


class LostAtTheBrokerError(AssertionError):
    """Our books hold working orders the broker has never seen (see
    :data:`LOST_AT_THE_BROKER`); raised after every other check passed."""


@dataclass
class Books:
    """What :func:`assert_books_match_the_broker` found."""

    statuses: dict[str, int]
    executions: int
    cash: Decimal

    def __str__(self) -> str:
        return f"{self.executions} executions, statuses {self.statuses}, cash {self.cash}"


async def assert_books_match_the_broker(
    stack: Stack,
    sent: set[str],
    *,
    account: str = ACCOUNT,
    portfolio: str = PORTFOLIO,
) -> Books:
    """Every check that makes "exactly once" true, against the simulator's own books:
    each order placed at most once and only ours; each order's state consistent with the
    broker's; the same execIds, each once, with the broker's shares, price and
    commission; one transaction per execution; cash to the cent; positions per symbol."""
    broker_orders = stack.broker_orders(account)
    refs = Counter(o.request.order_ref for o in broker_orders)
    twice = {ref: n for ref, n in refs.items() if n > 1}
    assert not twice, f"placed at the broker more than once: {twice}"
    assert set(refs) <= sent, f"unknown orderRefs at the broker: {set(refs) - sent}"

    async with stack.db() as db:
        orders = {
            r["client_order_id"]: r
            for r in await db.fetch("SELECT * FROM orders WHERE portfolio_id = $1", portfolio)
        }
        rows = await db.fetch(
            "SELECT e.* FROM executions e JOIN orders o USING (client_order_id)"
            " WHERE o.portfolio_id = $1",
            portfolio,
        )
        transactions = await db.fetch(
            "SELECT t.* FROM transactions t JOIN executions e ON e.exec_id = t.exec_id"
            " JOIN orders o ON o.client_order_id = e.client_order_id WHERE o.portfolio_id = $1",
            portfolio,
        )
        parked = await db.fetchval("SELECT count(*) FROM pending_commissions")
        portfolio_row = await db.fetchrow(
            "SELECT cash, reserved_cash FROM portfolios WHERE id = $1", portfolio
        )
    assert portfolio_row is not None

    # our orders: one row per id sent, none unresolved, each consistent with the broker
    assert set(orders) == sent, (
        f"missing: {sorted(sent - set(orders))[:5]}, extra: {sorted(set(orders) - sent)[:5]}"
    )
    statuses = Counter(r["status"] for r in orders.values())
    assert statuses["PENDING"] == statuses["UNKNOWN"] == 0, statuses
    not_placed = {coid for coid in orders if coid not in refs}
    # believed working, unknown to the broker (checked last: see LostAtTheBrokerError)
    lost = {c for c in not_placed if orders[c]["status"] in WORKING}
    assert all(orders[c]["status"] == "REJECTED" for c in not_placed - lost), {
        c: orders[c]["status"] for c in not_placed - lost if orders[c]["status"] != "REJECTED"
    }
    assert all(orders[c]["filled_quantity"] == 0 for c in not_placed)
    for o in broker_orders:
        ours = orders[o.request.order_ref]
        assert ours["filled_quantity"] == o.filled, (o.request.order_ref, o.filled, dict(ours))
        expected = {
            "Filled": {"FILLED"},
            "Cancelled": {"CANCELLED"},
            "ApiCancelled": {"CANCELLED"},
            "Inactive": {"REJECTED", "CANCELLED"},
        }.get(o.status, {"SUBMITTED", "PARTIALLY_FILLED", "CANCEL_REQUESTED"})
        assert ours["status"] in expected, (o.request.order_ref, o.status, ours["status"])
    assert all(r["reserved_cash"] == 0 for r in orders.values() if r["status"] != "SUBMITTED")

    # executions: the same execIds, each once, with the broker's figures
    fills = {f.execution.exec_id: f for f in stack.broker_fills(account)}
    booked = {r["exec_id"]: r for r in rows}
    assert len(rows) == len(booked)
    assert set(booked) == set(fills), (
        f"lost: {sorted(set(fills) - set(booked))[:10]}, "
        f"unknown: {sorted(set(booked) - set(fills))[:10]}"
    )
    for exec_id, fill in fills.items():
        row = booked[exec_id]
        assert row["client_order_id"] == fill.execution.order.request.order_ref
        assert row["quantity"] == fill.execution.shares
        assert row["price"] == fill.execution.price
        assert row["commission"] == fill.commission.commission, exec_id
    assert parked == 0, f"{parked} commissions parked without their execution"

    # transactions: one per execution; cash to the cent
    assert sorted(t["exec_id"] for t in transactions) == sorted(fills)
    cash = portfolio_row["cash"]
    broker_cash = Decimal(stack.broker_state(account)["cash"])
    assert cash == broker_cash, f"cash {cash} != broker {broker_cash}"
    assert portfolio_row["reserved_cash"] == 0 or statuses["SUBMITTED"]
    assert sum((t["cash_delta"] for t in transactions), Decimal(0)) == cash - stack.start_cash

    # positions: our net quantity per symbol (from our executions) = the broker's
    ours: Counter[str] = Counter()
    for exec_id, row in booked.items():
        fill = fills[exec_id]
        sign = 1 if fill.execution.side == "BOT" else -1
        ours[fill.execution.symbol] += sign * row["quantity"]
    assert {s: q for s, q in ours.items() if q} == stack.broker_positions(account)
    if lost:
        raise LostAtTheBrokerError(
            f"{len(lost)} orders {sorted(lost)[:5]} are {orders[min(lost)]['status']} in our"
            f" books (cash reserved: {sum(orders[c]['reserved_cash'] for c in lost)}) but"
            f" unknown to the broker: {LOST_AT_THE_BROKER}"
        )
    return Books(dict(statuses), len(rows), cash)


async def lost_at_the_broker(
    stack: Stack, account: str = ACCOUNT, portfolio: str = PORTFOLIO
) -> set[str]:
    """Our orders believed working (SUBMITTED...) that the broker has never seen."""
    refs = {o.request.order_ref for o in stack.broker_orders(account)}
    rows = await stack.fetch(
        "SELECT client_order_id FROM orders WHERE portfolio_id = $1 AND status = ANY($2::text[])",
        portfolio,
        sorted(WORKING),
    )
    return {r["client_order_id"] for r in rows} - refs


async def wait_until_none_lost(stack: Stack, within: float = 30.0) -> None:
    """Give the order-manager ``within`` seconds to resolve orders the broker never saw
    (the books check then reports the ones left as :class:`LostAtTheBrokerError`)."""
    with contextlib.suppress(AssertionError):
        await wait_for(
            lambda: _none(lost_at_the_broker(stack)), within=within, what="no order lost"
        )


async def _none(found: Awaitable[set[str]]) -> bool:
    return not await found


# ---------------------------------------------------------------------- gateway ghosts


class GhostClient:
    """A bare TWS API session holding a client id (what a crashed process's session
    looks like to the gateway): a later connection with that id gets error 326."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._drain: asyncio.Task[None] | None = None

    @classmethod
    async def hold(cls, port: int, client_id: int) -> GhostClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        versions = b"v157..176"
        writer.write(b"API\0" + struct.pack(">I", len(versions)) + versions)
        ghost = cls(reader, writer)
        await ghost._read()  # server version
        payload = "".join(f"{f}\0" for f in (71, 2, client_id, "")).encode()
        writer.write(struct.pack(">I", len(payload)) + payload)
        ghost._drain = asyncio.create_task(ghost._read_forever())
        return ghost

    async def _read(self) -> list[str]:
        (size,) = struct.unpack(">I", await self.reader.readexactly(4))
        return (await self.reader.readexactly(size)).decode().split("\0")[:-1]

    async def _read_forever(self) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await self._read()

    async def release(self) -> None:
        self.writer.close()
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain


__all__ = [
    "ACCOUNT",
    "PORTFOLIO",
    "POSITION_SYMBOLS",
    "POS_ACCOUNT",
    "POS_PORTFOLIO",
    "PRICES",
    "Books",
    "Burst",
    "GhostClient",
    "Infra",
    "LostAtTheBrokerError",
    "ServiceProcess",
    "Stack",
    "assert_books_match_the_broker",
    "chaos_stack",
    "consumer_lag",
    "run_burst",
    "start_services",
    "unsettled",
    "wait_for",
    "wait_settled",
    "wait_until_none_lost",
]
