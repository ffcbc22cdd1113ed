"""The CLI's side of the bus: connecting, exit codes, and reads of what NATS keeps.

The CLI speaks only NATS (the operators' channel): commands are request/reply with
the typed contracts (:func:`ibflow.bus.request`); state comes from the gateway-bridge's
KV bucket ``IBFLOW_BRIDGE_STATE`` and from the events JetStream keeps in
``IBFLOW_EVENTS`` (the last message of a subject, or a replay of one subject).

Exit codes (``docs/operators.md``): :data:`EXIT_OK` 0, :data:`EXIT_REFUSED` 1 (a
service answered with an error, or ``test-connection`` found a problem),
:data:`EXIT_USAGE` 2 (bad arguments or input, named), :data:`EXIT_UNREACHABLE` 3
(NATS unreachable, nobody answering, or no answer in time).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from pydantic import BaseModel, ValidationError

from ibflow.bus import request
from ibflow.bus.connection import connect
from ibflow.bus.errors import RemoteError, RequestError, describe_validation_error
from ibflow.bus.subjects import EVENTS_STREAM
from ibflow.contracts.base import Envelope

EXIT_OK: Final = 0
EXIT_REFUSED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3

BRIDGE_STATE_BUCKET: Final = "IBFLOW_BRIDGE_STATE"
"""The gateway-bridge's KV bucket (``connection.<p>``, ``account.<p>``, ``positions.<p>``)."""

UNREACHABLE_CODES: Final = frozenset({"timeout", "no_responders", "unavailable"})
"""Request failures that mean "nobody answered", not "refused"."""

T = TypeVar("T", bound=BaseModel)
M = TypeVar("M", bound=BaseModel)


class CliError(Exception):
    """Stop the command: print ``message`` to stderr and exit with ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Options:
    """The global options: where NATS is, how long to wait, who is asking."""

    nats_url: str
    creds: str | None
    timeout: float
    actor: str


def default_actor() -> str:
    """``operator:<login name>``, the ``requested_by`` of the commands the CLI sends."""
    try:
        return f"operator:{getpass.getuser()}"[:128]
    except (KeyError, OSError):
        return "operator:unknown"


def build(model: type[M], **fields: object) -> M:
    """``model(**fields)``, or :class:`CliError` (usage) naming each bad field."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise CliError(EXIT_USAGE, describe_validation_error(exc)) from None


class Bus:
    """One NATS connection for one CLI command."""

    def __init__(self, nc: NatsClient, options: Options) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=options.timeout)
        self.options = options

    async def ask(self, subject: str, command: Envelope, reply: type[T]) -> T:
        """Send ``command``; its reply, or :class:`CliError` with the refusal's reason."""
        try:
            return await request(self.nc, subject, command, reply, timeout=self.options.timeout)
        except RemoteError as exc:
            raise CliError(EXIT_REFUSED, f"refused ({exc.code}): {exc.message}") from None
        except RequestError as exc:
            code = EXIT_UNREACHABLE if exc.code in UNREACHABLE_CODES else EXIT_REFUSED
            hint = _hint(exc.code)
            raise CliError(code, f"{exc.code}: {exc.message}{hint}") from None

    # ---------------------------------------------------------------- KV bucket

    async def bridge_keys(self, prefix: str = "") -> list[str]:
        """Keys of the bridge's KV bucket starting with ``prefix`` ([] without the bucket).

        Read from the bucket's stream subjects (``$KV.<bucket>.<key>``) rather than a
        KV watcher: one request, and deleted keys are not listed.
        """
        head = f"$KV.{BRIDGE_STATE_BUCKET}."
        try:
            info = await self.js.stream_info(
                f"KV_{BRIDGE_STATE_BUCKET}", subjects_filter=f"{head}{prefix}>"
            )
        except nats.js.errors.NotFoundError:
            return []
        found = sorted(subject.removeprefix(head) for subject in info.state.subjects or {})
        present = []
        for key in found:
            if await self.bridge_value(key) is not None:
                present.append(key)
        return present

    async def bridge_value(self, key: str) -> bytes | None:
        """One value of the bridge's KV bucket, ``None`` when absent."""
        try:
            kv = await self.js.key_value(BRIDGE_STATE_BUCKET)
            entry = await kv.get(key)
        except (nats.js.errors.BucketNotFoundError, nats.js.errors.KeyNotFoundError):
            return None
        except nats.js.errors.NotFoundError:
            return None
        return entry.value or None

    async def portfolios(self) -> list[str]:
        """Portfolios the bridge keeps a connection state for."""
        keys = await self.bridge_keys("connection.")
        return sorted(key.split(".", 1)[1] for key in keys)

    # ---------------------------------------------------------------- the stream

    async def last(self, subject: str, model: type[M]) -> tuple[int, M] | None:
        """The last event stored on ``subject`` (its stream sequence), ``None`` if none."""
        try:
            raw = await self.js.get_last_msg(EVENTS_STREAM.name, subject)
        except nats.js.errors.NotFoundError:
            return None
        if raw.data is None or raw.seq is None:
            return None
        try:
            return raw.seq, model.model_validate_json(raw.data)
        except ValidationError:
            return None

    async def replay(self, subject: str, model: type[M]) -> list[M]:
        """Every event ``IBFLOW_EVENTS`` still holds on ``subject`` (a filter), oldest first;
        undecodable ones are skipped."""
        info = await self.js.stream_info(EVENTS_STREAM.name, subjects_filter=subject)
        if not info.state.subjects:
            return []
        sub = await self.js.subscribe(
            subject,
            stream=EVENTS_STREAM.name,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        found: list[M] = []
        try:
            while True:
                msg = await sub.next_msg(timeout=self.options.timeout)
                with _suppress_validation():
                    found.append(model.model_validate_json(msg.data))
                if msg.metadata.num_pending == 0:
                    break
        except nats.errors.TimeoutError:
            raise CliError(
                EXIT_UNREACHABLE, f"replaying {subject} stopped: no message within the timeout"
            ) from None
        finally:
            await sub.unsubscribe()
        return found


class _suppress_validation:  # noqa: N801 - used like contextlib.suppress
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        return kind is not None and issubclass(kind, ValidationError)


def _hint(code: str) -> str:
    if code == "no_responders":
        return " (is the service running? `make run` starts them all)"
    if code == "timeout":
        return " (the command may still have been carried out: check with `ibflow status`)"
    return ""


async def with_bus(options: Options, body: Callable[[Bus], Awaitable[int]]) -> int:
    """Connect, run ``body``, close; NATS being unreachable is :class:`CliError` (3)."""
    logging.getLogger("ibflow.bus").setLevel(logging.CRITICAL)
    try:
        # max_reconnect_attempts=0 would make nats-py retry the first connect forever
        async with asyncio.timeout(options.timeout + 1):
            nc = await connect(
                options.nats_url,
                name="ibflow-cli",
                creds=options.creds,
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                allow_reconnect=False,
                connect_timeout=max(1, int(options.timeout)),
            )
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        raise CliError(
            EXIT_UNREACHABLE,
            f"cannot reach NATS at {options.nats_url}: {exc or type(exc).__name__} "
            "(set IBFLOW_NATS_URL or --nats-url; is `make run` up?)",
        ) from None
    try:
        return await body(Bus(nc, options))
    except nats.errors.BadSubjectError:
        raise CliError(
            EXIT_USAGE, "not a valid NATS subject (tokens split by '.', no spaces)"
        ) from None
    except nats.errors.TimeoutError:
        raise CliError(EXIT_UNREACHABLE, "NATS did not answer in time") from None
    except nats.js.errors.ServiceUnavailableError:
        raise CliError(EXIT_UNREACHABLE, "JetStream is not enabled on this NATS server") from None
    finally:
        await nc.close()


def event_dict(msg: Msg) -> dict[str, object]:
    """A message's JSON payload as a dict (``{"raw": ...}`` when it is not an object)."""
    try:
        value = json.loads(msg.data)
    except ValueError:
        return {"raw": msg.data.decode(errors="replace")}
    return value if isinstance(value, dict) else {"raw": value}
