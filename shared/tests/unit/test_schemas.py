"""The committed JSON Schemas and docs/events.md: fresh, and evolving only additively."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from ibflow.contracts import catalogue_doc
from ibflow.contracts.schemas import (
    SCHEMA_DIR,
    JsonSchema,
    breaking_changes,
    catalogue_breaking_changes,
    export_schemas,
    load_schemas,
    main,
    render_json,
    repo_root,
    schema_files,
    stale_files,
)

ROOT = repo_root()
WRITE_SCHEMAS = "uv run python -m ibflow.contracts.schemas --write"
WRITE_DOC = "uv run python -m ibflow.contracts.catalogue_doc --write"


def _walk(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        return [node, *(n for value in node.values() for n in _walk(value))]
    if isinstance(node, list):
        return [n for value in node for n in _walk(value)]
    return []


def test_committed_schemas_are_fresh() -> None:
    stale = stale_files(schema_files(ROOT), (ROOT / SCHEMA_DIR).glob("*.json"))
    assert not stale, f"stale schemas {[p.name for p in stale]}: run `{WRITE_SCHEMAS}`"


def test_contracts_changed_only_additively_since_the_committed_schemas() -> None:
    problems = catalogue_breaking_changes(load_schemas(ROOT / SCHEMA_DIR), export_schemas())
    assert not problems, (
        "breaking change to a published v1 contract; add optional fields instead, or "
        f"introduce a new version: {problems}"
    )


def test_docs_catalogue_is_fresh() -> None:
    path = ROOT / catalogue_doc.DOC_PATH
    assert path.is_file(), f"missing {catalogue_doc.DOC_PATH}: run `{WRITE_DOC}`"
    assert path.read_text("utf-8") == catalogue_doc.render(), f"stale: run `{WRITE_DOC}`"


def test_docs_link_every_schema_file() -> None:
    doc = catalogue_doc.render()
    for name in export_schemas():
        assert f"(../{SCHEMA_DIR.as_posix()}/{name}.json)" in doc
        assert (ROOT / SCHEMA_DIR / f"{name}.json").is_file()


def test_no_number_travels_as_a_json_number_unless_it_is_an_integer() -> None:
    for name, schema in export_schemas().items():
        floats = [node for node in _walk(schema) if node.get("type") == "number"]
        assert not floats, f"{name} has a float on the wire"


def test_generated_output_is_deterministic() -> None:
    assert render_json(export_schemas()["SubmitOrder"]) == render_json(
        export_schemas()["SubmitOrder"]
    )
    assert catalogue_doc.render() == catalogue_doc.render()
    text = render_json({"b": 1, "a": [1]})
    assert text == '{\n  "a": [\n    1\n  ],\n  "b": 1\n}\n'


# --- breaking_changes on hand-made schemas --------------------------------------------

OLD: JsonSchema = {
    "type": "object",
    "title": "Thing",
    "properties": {
        "qty": {"type": "string", "format": "decimal"},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        "side": {"$ref": "#/$defs/Side"},
        "legs": {"type": "array", "items": {"$ref": "#/$defs/Leg"}},
    },
    "required": ["qty", "side"],
    "$defs": {
        "Side": {"type": "string", "enum": ["BUY", "SELL"]},
        "Leg": {"type": "object", "properties": {"px": {"type": "string"}}, "required": ["px"]},
    },
}


def _changed(path: tuple[str, ...], value: Any) -> JsonSchema:
    new = copy.deepcopy(OLD)
    node = new
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return new


def test_an_unchanged_schema_has_no_breaking_change() -> None:
    assert breaking_changes(OLD, copy.deepcopy(OLD)) == []


def test_an_added_optional_field_and_new_wording_are_compatible() -> None:
    new = _changed(("properties", "venue"), {"type": "string", "default": "SMART"})
    new["title"] = "Renamed"
    new["properties"]["qty"]["description"] = "How many."
    assert breaking_changes(OLD, new) == []


def test_a_removed_field_is_breaking() -> None:
    assert breaking_changes(OLD, _changed(("properties", "note"), None)) == ["note: removed"]


def test_a_new_required_field_is_breaking() -> None:
    new = _changed(("properties", "venue"), {"type": "string"})
    new["required"].append("venue")
    assert breaking_changes(OLD, new) == ["venue: new required field"]


def test_an_optional_field_becoming_required_is_breaking() -> None:
    new = _changed(("required",), ["qty", "side", "note"])
    assert breaking_changes(OLD, new) == ["note: became required field"]


def test_a_type_change_is_breaking() -> None:
    new = _changed(("properties", "qty"), {"type": "number"})
    assert breaking_changes(OLD, new) == ["qty: type changed from string:decimal to number"]


def test_a_field_becoming_nullable_is_breaking() -> None:
    nullable = {"anyOf": [{"type": "string", "format": "decimal"}, {"type": "null"}]}
    assert breaking_changes(OLD, _changed(("properties", "qty"), nullable)) == [
        "qty: type changed from string:decimal to null|string:decimal"
    ]


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        (["BUY", "SELL", "SHORT"], 'side: values added "SHORT"'),
        (["BUY"], 'side: values removed "SELL"'),
        (["BUY", "HOLD"], 'side: values removed "SELL"; values added "HOLD"'),
    ],
)
def test_changed_enum_values_are_breaking(values: list[str], problem: str) -> None:
    assert breaking_changes(OLD, _changed(("$defs", "Side", "enum"), values)) == [problem]


def test_reordered_enum_values_are_compatible() -> None:
    assert breaking_changes(OLD, _changed(("$defs", "Side", "enum"), ["SELL", "BUY"])) == []


def test_a_field_losing_its_enum_is_breaking() -> None:
    new = _changed(("properties", "side"), {"type": "string"})
    assert breaking_changes(OLD, new) == ["side: allowed values unrestricted"]


def test_changes_inside_nested_models_are_found() -> None:
    new = _changed(("$defs", "Leg", "properties", "px"), {"type": "integer"})
    assert breaking_changes(OLD, new) == ["legs[].px: type changed from string to integer"]


def test_a_removed_message_is_breaking() -> None:
    old = {"Thing": OLD, "Gone": OLD}
    assert catalogue_breaking_changes(old, {"Thing": OLD}) == ["Gone: message removed"]


# --- the command line -----------------------------------------------------------------


def test_check_fails_on_a_fresh_tree_and_passes_after_write(tmp_path: Path) -> None:
    assert main(["--check", "--root", str(tmp_path)]) == 1
    assert main(["--write", "--root", str(tmp_path)]) == 0
    assert main(["--check", "--root", str(tmp_path)]) == 0
    written = sorted(p.name for p in (tmp_path / SCHEMA_DIR).iterdir())
    assert written == sorted(f"{name}.json" for name in export_schemas())


def test_write_refuses_a_breaking_change_unless_allowed(tmp_path: Path) -> None:
    assert main(["--write", "--root", str(tmp_path)]) == 0
    committed = tmp_path / SCHEMA_DIR / "SubmitOrder.json"
    schema = json.loads(committed.read_text("utf-8"))
    schema["properties"]["legacy_field"] = {"type": "string"}
    committed.write_text(render_json(schema), "utf-8")

    assert main(["--write", "--root", str(tmp_path)]) == 2
    assert "legacy_field" in committed.read_text("utf-8")
    assert main(["--write", "--allow-breaking", "--root", str(tmp_path)]) == 0
    assert "legacy_field" not in committed.read_text("utf-8")


def test_write_removes_schemas_of_messages_no_longer_catalogued(tmp_path: Path) -> None:
    assert main(["--write", "--root", str(tmp_path)]) == 0
    orphan = tmp_path / SCHEMA_DIR / "Retired.json"
    orphan.write_text(render_json(OLD), "utf-8")
    assert main(["--check", "--root", str(tmp_path)]) == 1
    assert main(["--write", "--root", str(tmp_path)]) == 2
    assert main(["--write", "--allow-breaking", "--root", str(tmp_path)]) == 0
    assert not orphan.exists()


def test_doc_generator_checks_and_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert catalogue_doc.main(["--check", "--root", str(tmp_path)]) == 1
    assert WRITE_DOC in capsys.readouterr().err
    assert catalogue_doc.main(["--write", "--root", str(tmp_path)]) == 0
    assert catalogue_doc.main(["--check", "--root", str(tmp_path)]) == 0
