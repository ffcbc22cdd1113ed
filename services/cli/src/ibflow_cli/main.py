"""Entry point of the ``ibflow`` console script (filled in by :mod:`ibflow_cli.app`)."""

from __future__ import annotations


def main() -> None:
    """Console script ``ibflow``."""
    from ibflow_cli.app import app  # noqa: PLC0415

    app()
