"""Generates ``docs/events.md``, the human-readable message catalogue, from the registry.

Regenerate after changing a contract, and check in CI::

    uv run python -m ibflow.contracts.catalogue_doc --write
    uv run python -m ibflow.contracts.catalogue_doc --check

The table links each message's committed JSON Schema (:mod:`ibflow.contracts.schemas`).
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from ibflow.bus.subjects import ALL_PORTFOLIOS, ALL_STREAMS
from ibflow.contracts.base import Envelope
from ibflow.contracts.registry import CATALOGUE, MessageSpec
from ibflow.contracts.schemas import SCHEMA_DIR, repo_root, stale_files, sync_files

DOC_PATH: Final = Path("docs", "events.md")
"""Where the catalogue is written, relative to the repository root."""

_PROG: Final = "python -m ibflow.contracts.catalogue_doc"


_ROLE: Final = re.compile(r":[a-z]+:`~?([^`]+)`")
_LITERAL: Final = re.compile(r"``([^`]+)``")


def _markdown(text: str) -> str:
    """Docstring markup (Sphinx roles, double-backtick literals) as Markdown code spans."""
    return _LITERAL.sub(r"`\1`", _ROLE.sub(r"``\1``", text))


def _schema_link(spec: MessageSpec) -> str:
    target = Path("..", *SCHEMA_DIR.parts, f"{spec.name}.json").as_posix()
    return f"[{spec.name}.json]({target})"


def _dedupe_key(spec: MessageSpec) -> str | None:
    method = getattr(spec.model, "dedupe_key", None)
    if method is None or method is Envelope.dedupe_key:
        return None
    return inspect.cleandoc(method.__doc__ or "").split("\n\n", 1)[0]


def _row(spec: MessageSpec) -> str:
    cells = (
        f"[{spec.name}](#{spec.name.lower()})",
        spec.kind.value,
        f"`{spec.subject}`" if spec.subject else "reply inbox",
        spec.stream.name if spec.stream else "core NATS",
        ", ".join(spec.producers),
        ", ".join(spec.consumers),
        _schema_link(spec),
    )
    return f"| {' | '.join(cells)} |"


def _section(spec: MessageSpec) -> str:
    lines = [f"### {spec.name}", "", _markdown(spec.description), ""]
    if (key := _dedupe_key(spec)) is not None:
        lines += [f"Dedupe key: {_markdown(key)}", ""]
    return "\n".join(lines)


def render() -> str:
    """The whole document; depends only on the catalogue, so it is deterministic."""
    streams = "\n".join(
        f"- `{stream.name}` captures `{'`, `'.join(stream.subjects)}`: {stream.description}"
        for stream in ALL_STREAMS
    )
    header = f"""# ibflow message catalogue

<!-- Generated from ibflow.contracts.registry by
     `uv run {_PROG} --write`; do not edit by hand. -->

- Every message is JSON: the envelope (`event_id`, `ts_event`, `ts_init`, `correlation_id`,
  `causation_id`, `schema_version`) plus its own fields. Money, prices and quantities are
  decimal strings; timestamps are ISO 8601 in UTC; readers ignore fields they do not know.
- `{{portfolio}}` is a portfolio id, or `{ALL_PORTFOLIOS}` for a halt or resume of every
  portfolio; `{{symbol}}` is the symbol with `.` and spaces as `_`.
- Commands are request/reply on core NATS, answered with `CommandAccepted` or `ErrorReply`.
  "core NATS" subjects are never persisted.
- The dedupe key, where a message has one, is published as `Nats-Msg-Id` (else the
  `event_id`) and used as the idempotency key by consumers.
{streams}

| Message | Kind | Subject | Stream | Producers | Consumers | Schema |
|---|---|---|---|---|---|---|
"""
    rows = "\n".join(_row(spec) for spec in CATALOGUE)
    sections = "\n".join(_section(spec) for spec in CATALOGUE)
    return f"{header}{rows}\n\n## Messages\n\n{sections}".rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``--write`` ``docs/events.md``, or ``--check`` it (exit 1 when stale)."""
    parser = argparse.ArgumentParser(prog=_PROG)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="regenerate docs/events.md")
    mode.add_argument("--check", action="store_true", help="exit 1 if docs/events.md is stale")
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
