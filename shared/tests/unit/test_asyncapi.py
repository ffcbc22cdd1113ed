"""docs/asyncapi.yaml: fresh, and describing every subject of the catalogue."""

from __future__ import annotations

import re
from typing import Any

import yaml

from ibflow.contracts import asyncapi
from ibflow.contracts.registry import CATALOGUE, MessageKind
from ibflow.contracts.schemas import repo_root

WRITE = "uv run python -m ibflow.contracts.asyncapi --write (or make schemas)"


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def test_committed_asyncapi_document_is_fresh() -> None:
    path = repo_root() / asyncapi.DOC_PATH
    assert path.is_file(), f"missing {asyncapi.DOC_PATH}: run `{WRITE}`"
    assert path.read_text("utf-8") == asyncapi.render(), f"stale: run `{WRITE}`"


def test_every_catalogued_subject_is_a_channel_with_its_parameters_and_schema() -> None:
    doc = yaml.safe_load(asyncapi.render())
    assert doc["asyncapi"] == "3.0.0"
    for spec in CATALOGUE:
        message = doc["components"]["messages"][spec.name]
        assert message["payload"] == {"$ref": f"#/components/schemas/{spec.name}"}
        assert doc["components"]["schemas"][spec.name]["title"] == spec.name
        if spec.kind is MessageKind.REPLY:
            assert spec.name in doc["channels"][asyncapi.REPLY_CHANNEL]["messages"]
            continue
        channel = doc["channels"][spec.name]
        assert channel["address"] == spec.subject
        placeholders = set(re.findall(r"\{([a-z_]+)\}", spec.subject or ""))
        assert set(channel.get("parameters", {})) == placeholders
        action = doc["operations"][spec.name]["action"]
        assert action == ("send" if spec.kind is MessageKind.COMMAND else "receive")


def test_every_command_names_its_replies_and_every_reference_resolves() -> None:
    doc = yaml.safe_load(asyncapi.render())
    answered = set()
    for spec in CATALOGUE:
        if spec.kind is not MessageKind.COMMAND:
            continue
        replies = [
            ref["$ref"].rsplit("/", 1)[1]
            for ref in doc["operations"][spec.name]["reply"]["messages"]
        ]
        assert replies[-1] == "ErrorReply"
        answered.update(replies)
    assert answered == {spec.name for spec in CATALOGUE if spec.kind is MessageKind.REPLY}
    for ref in _refs(doc):
        assert _resolve(doc, ref) is not None, ref
