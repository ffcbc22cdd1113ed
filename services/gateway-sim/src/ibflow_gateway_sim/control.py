"""HTTP/JSON control API over the fault API (starlette, served by uvicorn in the same loop).

Enabled by default on port 4010 of the simulator's ``--host`` (``--control-port 0``
disables it). Bodies are JSON validated by pydantic: invalid JSON → 400, a body that
does not fit → 422 with one ``{"field", "error"}`` per problem, unknown symbol/account →
404. Endpoints:

==========================================  ============================================
``GET  /health``                            status, ports, connected clients, faults
``POST /faults/drop``                       close every client socket
``POST /faults/connectivity``               ``{"state": "lost"|"restored", "data_lost": false}``
``POST /faults/farm``                       ``{"farm": "market"|"hmds"|"secdef", "up": true}``
``POST /faults/freeze``                     ``{"on": true}`` (empty body = freeze)
``POST /faults/reject-next``                ``{"code": 201, "text": "..."}``
``POST /faults/delay``                      ``{"fills": 2.0, "commissions": 5.0}`` (seconds)
``POST /faults/silence``                    ``{"on": true, "client_id": null}``
``POST /restart``                           restart the gateway (clients dropped, state kept)
``POST /market/{symbol}/price``             ``{"price": "101.25"}`` → the new quote
``POST /market/advance``                    ``{"ticks": 10}`` (``auto_advance: false`` only)
``GET  /accounts/{id}``                     cash, values, positions, open orders, executions
==========================================  ============================================
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Generator
from decimal import Decimal
from typing import Any, Literal, TypeVar

import uvicorn
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ibflow_gateway_sim.faults import UnknownAccountError, UnknownSymbolError
from ibflow_gateway_sim.server import GatewaySimulator

__all__ = ["ControlServer", "create_control_app"]

log = logging.getLogger("ibflow_gateway_sim.control")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConnectivityBody(_Body):
    """``/faults/connectivity``."""

    state: Literal["lost", "restored"]
    data_lost: bool = False


class FarmBody(_Body):
    """``/faults/farm``."""

    farm: Literal["market", "hmds", "secdef"]
    up: bool


class FreezeBody(_Body):
    """``/faults/freeze``."""

    on: bool = True


class RejectBody(_Body):
    """``/faults/reject-next``."""

    code: int = Field(default=201, ge=100, le=99_999)
    text: str = Field(default="Simulated reject", max_length=500)


class DelayBody(_Body):
    """``/faults/delay`` (seconds; omitted = unchanged, 0 = no delay)."""

    fills: float | None = Field(default=None, ge=0, le=3600)
    commissions: float | None = Field(default=None, ge=0, le=3600)
    current_time: float | None = Field(default=None, ge=0, le=3600)


class SilenceBody(_Body):
    """``/faults/silence``."""

    on: bool
    client_id: int | None = None


class PriceBody(_Body):
    """``/market/{symbol}/price``."""

    price: Decimal = Field(gt=0, allow_inf_nan=False)


class AdvanceBody(_Body):
    """``/market/advance``."""

    ticks: int = Field(default=1, ge=1, le=1_000_000)


class _BadRequestError(Exception):
    def __init__(self, status: int, payload: dict[str, Any]) -> None:
        super().__init__(payload)
        self.status = status
        self.payload = payload


B = TypeVar("B", bound=_Body)


async def _body(request: Request, model: type[B]) -> B:
    raw = await request.body()
    try:
        data = json.loads(raw) if raw.strip() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _BadRequestError(400, {"error": f"body is not valid JSON: {exc}"}) from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [
            {"field": ".".join(str(p) for p in err["loc"]) or "(body)", "error": err["msg"]}
            for err in exc.errors()
        ]
        raise _BadRequestError(422, {"error": "invalid body", "problems": problems}) from exc


Handler = Callable[[Request], Awaitable[Response]]


def _guard(handler: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except _BadRequestError as exc:
            return JSONResponse(exc.payload, status_code=exc.status)
        except (UnknownSymbolError, UnknownAccountError) as exc:
            return JSONResponse({"error": f"unknown {exc.args[0]!r}"}, status_code=404)
        except RuntimeError as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)

    return wrapped


def _quote_json(quote: Any) -> dict[str, str]:
    return {
        name: str(getattr(quote, name))
        for name in ("bid", "ask", "last", "bid_size", "ask_size", "last_size", "volume")
    }


def create_control_app(sim: GatewaySimulator) -> Starlette:
    """The starlette app driving ``sim`` (see the module docstring for the endpoints)."""
    faults = sim.faults

    async def health(_: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "host": sim.host,
                "port": sim.port,
                "clients": sorted(s.client_id for s in sim.sessions() if s.client_id is not None),
                "sessions": [s.stats() for s in sim.sessions()],
                "faults": sim.fault_state.as_dict(),
                "market_frozen": sim.market.frozen,
            }
        )

    async def drop(_: Request) -> Response:
        return JSONResponse({"dropped": faults.drop_connections()})

    async def connectivity(request: Request) -> Response:
        body = await _body(request, ConnectivityBody)
        if body.state == "lost":
            faults.connectivity_lost()
        else:
            faults.connectivity_restored(data_lost=body.data_lost)
        return JSONResponse(body.model_dump())

    async def farm(request: Request) -> Response:
        body = await _body(request, FarmBody)
        faults.set_farm(body.farm, body.up)
        return JSONResponse(body.model_dump())

    async def freeze(request: Request) -> Response:
        body = await _body(request, FreezeBody)
        faults.freeze(body.on)
        return JSONResponse(body.model_dump())

    async def reject_next(request: Request) -> Response:
        body = await _body(request, RejectBody)
        faults.reject_next(body.code, body.text)
        return JSONResponse(body.model_dump())

    async def delay(request: Request) -> Response:
        body = await _body(request, DelayBody)
        faults.delay(fills=body.fills, commissions=body.commissions, current_time=body.current_time)
        state = sim.fault_state
        return JSONResponse(
            {
                "fills": state.fill_delay,
                "commissions": state.commission_delay,
                "current_time": state.current_time_delay,
            }
        )

    async def silence(request: Request) -> Response:
        body = await _body(request, SilenceBody)
        faults.silence(body.on, body.client_id)
        return JSONResponse(body.model_dump())

    async def restart(_: Request) -> Response:
        await faults.restart()
        return JSONResponse({"restarted": True, "port": sim.port})

    async def price(request: Request) -> Response:
        body = await _body(request, PriceBody)
        quote = faults.set_price(request.path_params["symbol"], body.price)
        return JSONResponse(_quote_json(quote))

    async def advance(request: Request) -> Response:
        body = await _body(request, AdvanceBody)
        sim.advance_market(body.ticks)
        return JSONResponse({"ticks": body.ticks, "now": sim.now().isoformat()})

    async def account(request: Request) -> Response:
        return JSONResponse(faults.account_state(request.path_params["account_id"]))

    routes = [
        Route("/health", _guard(health), methods=["GET"]),
        Route("/faults/drop", _guard(drop), methods=["POST"]),
        Route("/faults/connectivity", _guard(connectivity), methods=["POST"]),
        Route("/faults/farm", _guard(farm), methods=["POST"]),
        Route("/faults/freeze", _guard(freeze), methods=["POST"]),
        Route("/faults/reject-next", _guard(reject_next), methods=["POST"]),
        Route("/faults/delay", _guard(delay), methods=["POST"]),
        Route("/faults/silence", _guard(silence), methods=["POST"]),
        Route("/restart", _guard(restart), methods=["POST"]),
        Route("/market/advance", _guard(advance), methods=["POST"]),
        Route("/market/{symbol}/price", _guard(price), methods=["POST"]),
        Route("/accounts/{account_id}", _guard(account), methods=["GET"]),
    ]
    return Starlette(routes=routes)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handling (the simulator's entry point owns signals)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class ControlServer:
    """The control API served by uvicorn inside the simulator's event loop."""

    def __init__(self, sim: GatewaySimulator) -> None:
        self._sim = sim
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._port = 0

    @property
    def port(self) -> int:
        """The port actually listened on (after :meth:`start`)."""
        return self._port

    async def start(self, host: str = "127.0.0.1", port: int = 4010) -> None:
        """Bind ``host:port`` (raises :class:`OSError` if busy) and start serving."""
        sock = socket.create_server((host, port), reuse_port=False)
        sock.setblocking(False)
        self._port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            create_control_app(self._sim),
            log_level="warning",
            lifespan="off",
            access_log=False,
        )
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="control-api")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("control API stopped during startup")
            await asyncio.sleep(0.01)
        log.info("control API listening on http://%s:%d", host, self._port)

    async def stop(self) -> None:
        """Stop serving (in-flight requests get a short grace period)."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._server = None
        self._task = None
