"""``docs/asyncapi.yaml``: an AsyncAPI 3.0 description of every subject, generated from
the contract registry (:data:`ibflow.contracts.registry.CATALOGUE`) and the contracts'
JSON Schemas.

Regenerate after changing a contract (``make schemas`` does), and check in CI::

    uv run python -m ibflow.contracts.asyncapi --write
    uv run python -m ibflow.contracts.asyncapi --check

The document is written from the point of view of a client of the bus (an operator,
the API, a script): commands are operations it *sends* on ``ibflow.cmd.v1.*`` and
whose answer comes on its reply inbox (a channel with a dynamic address); events and
market data are operations it *receives*. Each channel carries one message type; its
``{portfolio}``/``{symbol}``/``{name}``/``{consumer}`` tokens are channel parameters.
Schemas are embedded: each contract's JSON Schema becomes ``components/schemas/<Type>``
and its ``$defs`` (enums, nested models) are shared ``components/schemas`` entries.
Extensions ``x-kind``, ``x-stream``, ``x-producers``, ``x-consumers`` and
``x-dedupe-key`` carry what AsyncAPI has no field for.

PyYAML is needed to render (it is in the development environment; no service imports
this module).
"""

from __future__ import annotations

import argparse
import copy
import inspect
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from ibflow.bus.publisher import CORRELATION_HEADER, MSG_ID_HEADER, TYPE_HEADER
from ibflow.bus.subjects import ALL_PORTFOLIOS, VERSION
from ibflow.contracts.registry import CATALOGUE, MessageKind, MessageSpec
from ibflow.contracts.schemas import repo_root, stale_files, sync_files

DOC_PATH: Final = Path("docs", "asyncapi.yaml")
_PROG: Final = "python -m ibflow.contracts.asyncapi"

REPLY_CHANNEL: Final = "replyInbox"
ERROR_REPLY: Final = "ErrorReply"
DEFAULT_REPLY: Final = "CommandAccepted"
REPLIES: Final[dict[str, str]] = {
    "RequestSessionSchedule": "SessionScheduleReported",
    "FindBrokerOrder": "BrokerOrderSearched",
    "PreviewBrokerOrder": "BrokerOrderPreviewed",
    "CreateApiKey": "ApiKeyCreated",
    "ListApiKeys": "ApiKeysListed",
    "RevokeApiKey": "ApiKeyRevoked",
}
"""The success reply of each command that is not answered with ``CommandAccepted``."""

PARAMETERS: Final[dict[str, str]] = {
    "portfolio": f"A portfolio id, or `{ALL_PORTFOLIOS}` for a halt or resume of every portfolio.",
    "symbol": "A symbol, with `.` and spaces written `_` (`BRK B` -> `BRK_B`).",
    "name": "A session event's name (`morning_entry`, `close_out`, ...).",
    "consumer": "The durable consumer that gave the message up.",
}


def _reply_of(spec: MessageSpec) -> str:
    return REPLIES.get(spec.name, DEFAULT_REPLY)


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: (
                value.replace("#/$defs/", "#/components/schemas/")
                if key == "$ref" and isinstance(value, str)
                else _rewrite_refs(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(value) for value in node]
    return node


def _schemas() -> dict[str, Any]:
    """Every contract's schema and every shared definition, refs pointing into components."""
    found: dict[str, Any] = {}
    for spec in CATALOGUE:
        schema = copy.deepcopy(spec.model.model_json_schema(mode="serialization"))
        definitions = schema.pop("$defs", {})
        for name, raw in {**definitions, spec.name: schema}.items():
            definition = _rewrite_refs(raw)
            if name in found and found[name] != definition:
                raise ValueError(f"two different schemas are both named {name!r}")
            found[name] = definition
    return dict(sorted(found.items()))


def _headers(spec: MessageSpec) -> dict[str, Any]:
    properties: dict[str, Any] = {
        TYPE_HEADER: {"type": "string", "const": spec.name, "description": "The type's name."},
        CORRELATION_HEADER: {"type": "string", "description": "The envelope's correlation_id."},
    }
    if spec.stream is not None:
        properties[MSG_ID_HEADER] = {
            "type": "string",
            "description": "JetStream de-duplication id: the dedupe key, else the event_id.",
        }
    return {"type": "object", "properties": properties}


def _dedupe_key(spec: MessageSpec) -> str | None:
    method = spec.model.__dict__.get("dedupe_key")
    if method is None:
        return None
    doc = inspect.getdoc(method) or ""
    return doc.split("\n", 1)[0].strip().strip("`").rstrip(".").strip("`") or None


def _message(spec: MessageSpec) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": spec.name,
        "title": spec.name,
        "summary": spec.description.split("\n\n", 1)[0],
        "contentType": "application/json",
        "payload": {"$ref": f"#/components/schemas/{spec.name}"},
        "x-kind": str(spec.kind),
        "x-producers": [str(s) for s in spec.producers],
        "x-consumers": [str(s) for s in spec.consumers],
    }
    if spec.kind is not MessageKind.REPLY:
        message["headers"] = _headers(spec)
    if "\n\n" in spec.description:
        message["description"] = spec.description
    if spec.stream is not None:
        message["x-stream"] = spec.stream.name
    if (key := _dedupe_key(spec)) is not None:
        message["x-dedupe-key"] = key
    return message


def _channel(spec: MessageSpec) -> dict[str, Any]:
    assert spec.subject is not None
    ref = {"$ref": f"#/components/messages/{spec.name}"}
    channel: dict[str, Any] = {
        "address": spec.subject,
        "title": spec.subject,
        "messages": {spec.name: ref},
    }
    where = (
        f"Persisted in the JetStream stream `{spec.stream.name}`."
        if spec.stream is not None
        else "Core NATS, not persisted."
    )
    if spec.kind is MessageKind.COMMAND:
        where += " Request/reply: the answer goes to the requester's reply inbox."
    channel["description"] = where
    names = [name for name in PARAMETERS if f"{{{name}}}" in spec.subject]
    if names:
        channel["parameters"] = {name: {"description": PARAMETERS[name]} for name in names}
    return channel


def _operation(spec: MessageSpec) -> dict[str, Any]:
    channel = f"#/channels/{spec.name}"
    operation: dict[str, Any] = {
        "action": "send" if spec.kind is MessageKind.COMMAND else "receive",
        "channel": {"$ref": channel},
        "summary": spec.description.split("\n\n", 1)[0],
        "messages": [{"$ref": f"{channel}/messages/{spec.name}"}],
    }
    if spec.kind is MessageKind.COMMAND:
        replies = f"#/channels/{REPLY_CHANNEL}/messages"
        operation["reply"] = {
            "channel": {"$ref": f"#/channels/{REPLY_CHANNEL}"},
            "messages": [
                {"$ref": f"{replies}/{_reply_of(spec)}"},
                {"$ref": f"{replies}/{ERROR_REPLY}"},
            ],
        }
    return operation


def document() -> dict[str, Any]:
    """The AsyncAPI document as a mapping."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    replies: dict[str, Any] = {}
    for spec in CATALOGUE:
        if spec.kind is MessageKind.REPLY:
            replies[spec.name] = {"$ref": f"#/components/messages/{spec.name}"}
            continue
        channels[spec.name] = _channel(spec)
        operations[spec.name] = _operation(spec)
    channels[REPLY_CHANNEL] = {
        "address": None,
        "title": "reply inbox",
        "description": "The requester's NATS reply subject (`_INBOX.*`), chosen per request.",
        "messages": replies,
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "ibflow",
            "version": VERSION,
            "description": (
                "Every subject of ibflow's NATS bus, generated from the contract registry "
                "(`uv run python -m ibflow.contracts.asyncapi --write`; do not edit by hand). "
                "Messages are JSON; money, prices and quantities are decimal strings; "
                "timestamps ISO 8601 UTC; readers ignore unknown fields. See docs/events.md "
                "and docs/operators.md."
            ),
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": "`make run` (IBFLOW_DEV_NATS_PORT)",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": {spec.name: _message(spec) for spec in CATALOGUE},
            "schemas": _schemas(),
        },
    }


def render() -> str:
    """The committed text of ``docs/asyncapi.yaml``."""
    import yaml  # noqa: PLC0415 - a development-time dependency

    header = (
        "# Generated from ibflow.contracts.registry by\n"
        f"# `uv run {_PROG} --write`; do not edit by hand.\n"
    )
    body = yaml.safe_dump(document(), sort_keys=False, allow_unicode=True, width=100)
    return header + body


def main(argv: Sequence[str] | None = None) -> int:
    """``--write`` ``docs/asyncapi.yaml``, or ``--check`` it (exit 1 when stale)."""
    parser = argparse.ArgumentParser(prog=_PROG)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="regenerate docs/asyncapi.yaml")
    mode.add_argument("--check", action="store_true", help="exit 1 if docs/asyncapi.yaml is stale")
    parser.add_argument("--root", type=Path, default=None, help="repository root")
    args = parser.parse_args(argv)

    path = (args.root or repo_root()) / DOC_PATH
    expected = {path: render()}
    if args.check:
        if stale := stale_files(expected, ()):
            print(f"stale: {DOC_PATH}; run: uv run {_PROG} --write", file=sys.stderr)
        return 1 if stale else 0
    changed = sync_files(expected, ())
    print(f"{DOC_PATH} {'updated' if changed else 'unchanged'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
