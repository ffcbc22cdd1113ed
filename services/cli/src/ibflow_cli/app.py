"""The ``ibflow`` command tree."""

from __future__ import annotations

import typer

app = typer.Typer(name="ibflow", help="Operate ibflow over NATS.", no_args_is_help=True)


@app.command()
def version() -> None:
    """Print the CLI's version."""
    typer.echo("ibflow-cli 0.1.0")
