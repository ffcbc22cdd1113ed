"""FastAPI dependencies: the running services, the caller's key and scope, the portfolio.

Routes declare what they need with ``Annotated`` aliases::

    async def orders(ctx: Ctx, key: ReadKey, portfolio: PortfolioParam) -> OrdersResponse:
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Query, Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer
from nats.aio.client import Client as NatsClient

from ibflow.db.outbox import OutboxRelay
from ibflow.runtime.service import DbPool
from ibflow_api import repository as repo
from ibflow_api.auth import KeyVerifier
from ibflow_api.bridge_state import BridgeState
from ibflow_api.errors import ApiError
from ibflow_api.keys import ApiKey, Scope
from ibflow_api.schemas import Portfolio
from ibflow_api.settings import ApiSettings
from ibflow_api.ws import Hub

PORTFOLIO_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


@dataclass(slots=True)
class Services:
    """What the routes use, available once the runtime has connected."""

    settings: ApiSettings
    pool: DbPool
    nats: NatsClient
    relay: OutboxRelay
    hub: Hub
    bridge: BridgeState
    keys: KeyVerifier
    known_portfolios: set[str] = field(default_factory=set)
    """Ids of portfolios found in the table (never deleted, so never stale)."""


# Every dependency here is `async def`: FastAPI runs a plain `def` one in its threadpool,
# a thread hop on every request (tests/integration/test_place_path.py checks).
async def _services(request: Request) -> Services:
    services: Services | None = request.app.state.services
    if services is None:
        raise ApiError(503, "not_ready", "the API is starting")
    return services


Ctx = Annotated[Services, Depends(_services)]
"""The running services (503 while starting)."""

# Declared for OpenAPI (the middleware does the checking): either header works.
_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKey")
_bearer = HTTPBearer(auto_error=False, scheme_name="Bearer")


def require(scope: Scope) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency returning the caller's key when its scope allows ``scope`` (else 403)."""

    async def check(
        request: Request,
        _header: Annotated[str | None, Security(_key_header)] = None,
        _bearer_token: Annotated[Any, Security(_bearer)] = None,
    ) -> ApiKey:
        key: ApiKey | None = getattr(request.state, "api_key", None)
        if key is None:
            raise ApiError(401, "unauthenticated", "an API key is required")
        if not key.scope.allows(scope):
            raise ApiError(
                403,
                "forbidden",
                f"this call needs the {scope.value} scope; key {key.id} has {key.scope.value}",
            )
        return key

    return check


ReadKey = Annotated[ApiKey, Depends(require(Scope.READ))]
TradeKey = Annotated[ApiKey, Depends(require(Scope.TRADE))]
AdminKey = Annotated[ApiKey, Depends(require(Scope.ADMIN))]


PortfolioQuery = Annotated[
    str | None,
    Query(
        pattern=PORTFOLIO_PATTERN,
        description="Portfolio id; default: IBFLOW_DEFAULT_PORTFOLIO, else the first "
        "enabled portfolio.",
    ),
]
"""The ``?portfolio=`` query parameter of the dashboard routes."""


async def _portfolio(ctx: Ctx, portfolio: PortfolioQuery = None) -> Portfolio:
    async with ctx.pool.acquire() as conn:
        if portfolio is None:
            found = await repo.default_portfolio(conn, ctx.settings.default_portfolio)
            if found is None:
                raise ApiError(404, "not_found", "no portfolio configured; pass ?portfolio=")
            return found
        found = await repo.get_portfolio(conn, portfolio)
    if found is None:
        raise ApiError(404, "not_found", f"portfolio {portfolio!r} does not exist")
    return found


PortfolioParam = Annotated[Portfolio, Depends(_portfolio)]
"""The ``?portfolio=`` of a dashboard route, or the default one (404 when unknown)."""


async def _portfolio_id(ctx: Ctx, portfolio: PortfolioQuery = None) -> str:
    # Portfolios are never deleted (nothing in ibflow deletes one; orders, cash and the
    # audit refer to them), so an id once found stays valid: it is remembered and not
    # looked up again. An unknown id is looked up every time (a portfolio created a
    # moment ago is found), and so is "the first enabled portfolio", which changes with
    # every enable/disable. The order-manager checks existence and `enabled` again.
    wanted = portfolio if portfolio is not None else ctx.settings.default_portfolio
    if wanted is not None and wanted in ctx.known_portfolios:
        return wanted
    found = await _portfolio(ctx, portfolio)
    ctx.known_portfolios.add(found.id)
    return found.id


PortfolioIdParam = Annotated[str, Depends(_portfolio_id)]
"""The id of the ``?portfolio=`` (or default) portfolio, 404 when unknown; for routes
that need nothing but the id (existence is remembered, see ``docs/api.md``)."""
