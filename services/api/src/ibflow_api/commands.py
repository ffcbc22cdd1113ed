"""Commands over NATS request/reply, with their failures turned into API errors and,
for commands whose handler keeps no audit trail of its own, an audit row.

The order-manager audits every command it handles (with ``requested_by``, the key's
identity), so its commands are not audited twice here; the bridge, the scheduler and
the position-monitor do not, so the API records those calls itself.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

from ibflow.bus.errors import RequestError
from ibflow.bus.rpc import request
from ibflow.contracts.base import Envelope
from ibflow_api import repository as repo
from ibflow_api.deps import Services
from ibflow_api.errors import ApiError
from ibflow_api.keys import ApiKey

T = TypeVar("T", bound=BaseModel)


async def send(ctx: Services, subject: str, cmd: Envelope, reply: type[T]) -> T:
    """Send ``cmd`` and return its reply; a failure raises the matching :class:`ApiError`."""
    try:
        return await request(ctx.nats, subject, cmd, reply, timeout=ctx.settings.command_timeout)
    except RequestError as exc:
        raise ApiError.from_command(exc, subject) from None


async def send_audited(
    ctx: Services,
    key: ApiKey,
    subject: str,
    cmd: Envelope,
    reply: type[T],
    *,
    portfolio_id: str | None,
) -> T:
    """:func:`send`, with the call and its outcome in ``audit_log`` under the key's identity."""
    try:
        answer = await send(ctx, subject, cmd, reply)
    except ApiError as exc:
        await _audit(
            ctx,
            key=key,
            subject=subject,
            cmd=cmd,
            portfolio_id=portfolio_id,
            result="refused" if exc.status < 500 else "failed",
            detail=f"{exc.code}: {exc.message}",
        )
        raise
    await _audit(
        ctx,
        key=key,
        subject=subject,
        cmd=cmd,
        portfolio_id=portfolio_id,
        result="accepted",
        detail=None,
    )
    return answer


async def _audit(
    ctx: Services,
    *,
    key: ApiKey,
    subject: str,
    cmd: Envelope,
    portfolio_id: str | None,
    result: str,
    detail: str | None,
) -> None:
    payload: Any = cmd.model_dump(mode="json")
    async with ctx.pool.acquire() as conn:
        await repo.audit(
            conn,
            actor=key.actor,
            command=cmd.type_name(),
            subject=subject,
            portfolio_id=portfolio_id,
            payload=payload,
            result=result,
            detail=detail,
        )
