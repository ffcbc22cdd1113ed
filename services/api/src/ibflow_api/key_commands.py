"""API keys managed over NATS (``ibflow api-key create|list|revoke``, the operators' CLI):
``CreateApiKey``, ``ListApiKeys``, ``RevokeApiKey`` on ``ibflow.cmd.v1.api_key.*``.

The secret exists only in the ``ApiKeyCreated`` reply (core NATS, to the requester's
inbox): it is never stored, logged, audited or published. Creations and revocations are
written to ``audit_log`` with the requester, in the transaction of the change.
"""

from __future__ import annotations

import contextlib
from typing import Final

from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription

from ibflow.bus import serve, subjects
from ibflow.bus.errors import RemoteError
from ibflow.contracts import (
    ApiKeyCreated,
    ApiKeyInfo,
    ApiKeyRevoked,
    ApiKeysListed,
    CreateApiKey,
    ListApiKeys,
    RevokeApiKey,
)
from ibflow.contracts.replies import INVALID_REQUEST, NOT_FOUND
from ibflow.db import transaction
from ibflow.runtime.service import DbPool
from ibflow_api import repository as repo
from ibflow_api.keys import ApiKey, Scope, create_key, get_key, list_keys, revoke_key

QUEUE_GROUP: Final = "api"


def info(key: ApiKey) -> ApiKeyInfo:
    """The contract form of a stored key (no secret)."""
    return ApiKeyInfo(
        key_id=key.id,
        name=key.name,
        scope=key.scope.value,
        created_by=key.created_by,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
        last_used_at=key.last_used_at,
    )


class KeyCommands:
    """The three handlers, over the api's pool."""

    def __init__(self, pool: DbPool) -> None:
        self._pool = pool

    async def create(self, cmd: CreateApiKey) -> ApiKeyCreated:
        """Store a new key; the reply carries it whole, once."""
        async with transaction(self._pool) as conn:
            try:
                created = await create_key(
                    conn, cmd.name, Scope(cmd.scope), created_by=cmd.requested_by
                )
            except ValueError as exc:
                raise RemoteError(INVALID_REQUEST, str(exc)) from None
            await repo.audit(
                conn,
                actor=cmd.requested_by,
                command="api_key.create",
                subject=f"api_key:{created.key.id}",
                payload={"key_id": created.key.id, "name": cmd.name, "scope": cmd.scope},
                result="accepted",
            )
        return ApiKeyCreated(key=info(created.key), secret=created.secret)

    async def listing(self, cmd: ListApiKeys) -> ApiKeysListed:
        """Every key (revoked ones with ``include_revoked``), never a secret."""
        async with self._pool.acquire() as conn:
            keys = await list_keys(conn, include_revoked=cmd.include_revoked)
        return ApiKeysListed(keys=tuple(info(key) for key in keys))

    async def revoke(self, cmd: RevokeApiKey) -> ApiKeyRevoked:
        """Revoke an active key (``not_found`` when there is none with this id)."""
        async with transaction(self._pool) as conn:
            if not await revoke_key(conn, cmd.key_id):
                raise RemoteError(NOT_FOUND, f"key_id: no active key {cmd.key_id}")
            key = await get_key(conn, cmd.key_id)
            assert key is not None
            await repo.audit(
                conn,
                actor=cmd.requested_by,
                command="api_key.revoke",
                subject=f"api_key:{key.id}",
                payload={"key_id": key.id, "reason": cmd.reason},
                result="accepted",
            )
        return ApiKeyRevoked(key=info(key))

    async def serve(self, nc: NatsClient) -> list[Subscription]:
        """Answer the three commands (queue group ``api``: one replica answers each)."""
        return [
            await serve(nc, subjects.CREATE_API_KEY, CreateApiKey, self.create, queue=QUEUE_GROUP),
            await serve(nc, subjects.LIST_API_KEYS, ListApiKeys, self.listing, queue=QUEUE_GROUP),
            await serve(nc, subjects.REVOKE_API_KEY, RevokeApiKey, self.revoke, queue=QUEUE_GROUP),
        ]


async def unsubscribe(subscriptions: list[Subscription]) -> None:
    """Stop answering."""
    for sub in subscriptions:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
