"""The API's keys, managed over NATS by operators (``ibflow api-key``), served by the api.

A key reads ``ibf_<id>_<secret>``; only a hash of the secret is stored, so the whole key
exists once, in the :class:`ApiKeyCreated` reply to :class:`CreateApiKey` (a core-NATS
reply to the requester's inbox: never persisted, never published as an event). Scopes
are ordered ``read`` < ``trade`` < ``admin``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ibflow.contracts.base import Actor, Command, Contract, UtcDatetime

ApiKeyScope = Literal["read", "trade", "admin"]
"""What a key may do: read everything, also trade, or also administer."""

ApiKeyId = Annotated[str, Field(pattern=r"^[0-9a-f]{12}$")]
"""A key's public id (12 hex characters), shown in listings and audit entries."""


class ApiKeyInfo(Contract):
    """A stored key, without its secret."""

    key_id: ApiKeyId
    name: str
    scope: ApiKeyScope
    created_by: str
    created_at: UtcDatetime
    revoked_at: UtcDatetime | None = None
    last_used_at: UtcDatetime | None = None


class CreateApiKey(Command):
    """Ask the api to create an API key (``ibflow.cmd.v1.api_key.create``); answered with
    :class:`ApiKeyCreated`, the only place the key's secret ever appears."""

    name: str = Field(min_length=1, max_length=100, pattern=r"\S")
    """What the key is for (``grafana``, ``alice's laptop``)."""
    scope: ApiKeyScope = "read"
    requested_by: Actor


class ApiKeyCreated(Contract):
    """The answer to :class:`CreateApiKey`: the new key, whole, shown once."""

    key: ApiKeyInfo
    secret: str = Field(min_length=1)
    """The whole key (``ibf_<id>_<secret>``), to be handed over now: it cannot be read back."""


class ListApiKeys(Command):
    """Ask the api for its keys (never their secrets); answered with :class:`ApiKeysListed`."""

    include_revoked: bool = False
    requested_by: Actor


class ApiKeysListed(Contract):
    """The answer to :class:`ListApiKeys`: the keys, oldest first."""

    keys: tuple[ApiKeyInfo, ...] = ()


class RevokeApiKey(Command):
    """Ask the api to revoke a key now (``not_found`` when no active key has this id);
    answered with :class:`ApiKeyRevoked`. The api stops accepting it within its key cache
    delay."""

    key_id: ApiKeyId
    reason: str = ""
    requested_by: Actor


class ApiKeyRevoked(Contract):
    """The answer to :class:`RevokeApiKey`: the key as it is now, revoked."""

    key: ApiKeyInfo
