"""The catalogue's JSON Schemas, committed under ``shared/schemas/v1``, and the rule that
a version's schemas only grow.

Regenerate after changing a contract, and check in CI::

    uv run python -m ibflow.contracts.schemas --write
    uv run python -m ibflow.contracts.schemas --check

``--write`` refuses a breaking change (:func:`breaking_changes`) unless given
``--allow-breaking``: a breaking change belongs in a new version (``v2`` subjects and
schemas), because the events stream still holds, and old consumers still read, ``v1``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from ibflow.bus.subjects import VERSION
from ibflow.contracts.registry import CATALOGUE

JsonSchema = dict[str, Any]

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_DIR: Final = Path("shared", "schemas", VERSION)
"""Where the schemas live, relative to the repository root."""


def repo_root() -> Path:
    """The repository root (the directory holding ``shared/``), found from this file."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "shared" / "src" / "ibflow").is_dir():
            return parent
    raise RuntimeError(f"no ibflow repository around {here}")


def export_schemas() -> dict[str, JsonSchema]:
    """The JSON Schema (serialisation mode: what is on the wire) of every catalogued type."""
    return {
        spec.name: {"$schema": DIALECT, **spec.model.model_json_schema(mode="serialization")}
        for spec in CATALOGUE
    }


def render_json(schema: JsonSchema) -> str:
    """The committed form of a schema: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def schema_files(root: Path) -> dict[Path, str]:
    """Every schema file as it should be: path → content."""
    directory = root / SCHEMA_DIR
    return {directory / f"{name}.json": render_json(s) for name, s in export_schemas().items()}


def load_schemas(directory: Path) -> dict[str, JsonSchema]:
    """The schemas committed in ``directory``, by type name."""
    return {path.stem: json.loads(path.read_text("utf-8")) for path in directory.glob("*.json")}


def stale_files(expected: Mapping[Path, str], owned: Iterable[Path]) -> list[Path]:
    """Files that are missing or differ from ``expected``, and ``owned`` ones not expected."""
    stale = {
        path
        for path, content in expected.items()
        if not path.is_file() or path.read_text("utf-8") != content
    }
    stale.update(path for path in owned if path not in expected)
    return sorted(stale)


def sync_files(expected: Mapping[Path, str], owned: Iterable[Path]) -> list[Path]:
    """Make the files equal to ``expected`` (deleting ``owned`` extras); the paths changed."""
    changed = stale_files(expected, owned)
    for path in changed:
        if path in expected:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(expected[path], "utf-8")
        else:
            path.unlink()
    return changed


# --- compatibility --------------------------------------------------------------------


def breaking_changes(old: JsonSchema, new: JsonSchema) -> list[str]:
    """Why a message with schema ``new`` is not a compatible evolution of ``old``.

    Breaking: a property removed, a property's type changed (including becoming or
    ceasing to be nullable), a field newly required, enum values added or removed (old
    readers refuse new values, new readers the old values still in the stream). Nested
    models, arrays and maps are compared recursively. Adding optional fields, and changing
    titles, descriptions or defaults, is compatible.
    """
    return _diff(old, new, old.get("$defs", {}), new.get("$defs", {}), "")


def catalogue_breaking_changes(
    old: Mapping[str, JsonSchema], new: Mapping[str, JsonSchema]
) -> list[str]:
    """:func:`breaking_changes` of every message, plus messages that disappeared."""
    problems: list[str] = []
    for name in sorted(old):
        if name not in new:
            problems.append(f"{name}: message removed")
        else:
            problems.extend(f"{name}: {p}" for p in breaking_changes(old[name], new[name]))
    return problems


def _deref(schema: JsonSchema, defs: Mapping[str, JsonSchema]) -> JsonSchema:
    while "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _branches(schema: JsonSchema) -> list[JsonSchema] | None:
    branches = schema.get("anyOf", schema.get("oneOf"))
    return None if branches is None else list(branches)


def _allowed_values(schema: JsonSchema) -> frozenset[str] | None:
    if "enum" in schema:
        return frozenset(json.dumps(value) for value in schema["enum"])
    return frozenset({json.dumps(schema["const"])}) if "const" in schema else None


def _values_change(old: frozenset[str] | None, new: frozenset[str] | None) -> str | None:
    if old == new:
        return None
    if old is None or new is None:
        return "allowed values now restricted" if old is None else "allowed values unrestricted"
    changes = (("removed", old - new), ("added", new - old))
    return "; ".join(f"values {verb} {', '.join(sorted(vs))}" for verb, vs in changes if vs)


def _type_of(schema: JsonSchema, defs: Mapping[str, JsonSchema]) -> str:
    schema = _deref(schema, defs)
    branches = _branches(schema)
    if branches is not None:
        return "|".join(sorted({_type_of(branch, defs) for branch in branches}))
    kind = schema.get("type", "any")
    kind = "|".join(sorted(kind)) if isinstance(kind, list) else str(kind)
    return f"{kind}:{schema['format']}" if "format" in schema else kind


def _diff(
    old: JsonSchema,
    new: JsonSchema,
    old_defs: Mapping[str, JsonSchema],
    new_defs: Mapping[str, JsonSchema],
    path: str,
) -> list[str]:
    old, new = _deref(old, old_defs), _deref(new, new_defs)
    where = path or "(message)"
    old_type, new_type = _type_of(old, old_defs), _type_of(new, new_defs)
    if old_type != new_type:
        return [f"{where}: type changed from {old_type} to {new_type}"]

    def nested(a: JsonSchema, b: JsonSchema, sub: str) -> list[str]:
        return _diff(a, b, old_defs, new_defs, sub)

    problems: list[str] = []
    old_branches, new_branches = _branches(old), _branches(new)
    if old_branches is not None and new_branches is not None:
        olds = sorted(old_branches, key=lambda branch: _type_of(branch, old_defs))
        news = sorted(new_branches, key=lambda branch: _type_of(branch, new_defs))
        for old_branch, new_branch in zip(olds, news, strict=False):
            problems.extend(nested(old_branch, new_branch, path))
    if change := _values_change(_allowed_values(old), _allowed_values(new)):
        problems.append(f"{where}: {change}")
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    for name in sorted(old_props):
        sub = f"{path}.{name}" if path else name
        if name not in new_props:
            problems.append(f"{sub}: removed")
        else:
            problems.extend(nested(old_props[name], new_props[name], sub))
    for name in sorted(set(new.get("required", ())) - set(old.get("required", ()))):
        sub = f"{path}.{name}" if path else name
        problems.append(f"{sub}: {'became' if name in old_props else 'new'} required field")
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(old.get(key), dict) and isinstance(new.get(key), dict):
            problems.extend(nested(old[key], new[key], f"{where}{suffix}"))
    return problems


# --- command line ---------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``--write`` the schema files, or ``--check`` them (exit 1 when stale)."""
    parser = argparse.ArgumentParser(prog="python -m ibflow.contracts.schemas")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="regenerate the schema files")
    mode.add_argument("--check", action="store_true", help="exit 1 if any file is stale")
    parser.add_argument("--allow-breaking", action="store_true", help="write breaking changes")
    parser.add_argument("--root", type=Path, default=None, help="repository root")
    args = parser.parse_args(argv)

    root = args.root or repo_root()
    directory = root / SCHEMA_DIR
    expected = schema_files(root)
    breaking = catalogue_breaking_changes(load_schemas(directory), export_schemas())
    for problem in breaking:
        print(f"breaking change: {problem}", file=sys.stderr)
    if args.check:
        stale = stale_files(expected, directory.glob("*.json"))
        for path in stale:
            print(f"stale: {path.relative_to(root)}", file=sys.stderr)
        if stale:
            print(f"run: uv run {parser.prog} --write", file=sys.stderr)
        return 1 if stale else 0
    if breaking and not args.allow_breaking:
        print("not written: make a new version, or pass --allow-breaking", file=sys.stderr)
        return 2
    changed = sync_files(expected, directory.glob("*.json"))
    print(f"{len(changed)} schema file(s) updated in {directory.relative_to(root)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
