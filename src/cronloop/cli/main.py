"""The ``cronloop`` command line."""

from __future__ import annotations

import typer

from cronloop import __version__

app = typer.Typer(
    name="cronloop",
    help="A distributed cron and job scheduler built on the sync loop.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def version() -> None:
    """Print cronloop's version."""
    typer.echo(__version__)


@app.command()
def demo(
    seed: int = typer.Option(7, help="Random seed of the interleaving."),
) -> None:
    """Show the seed-000 bug (out-of-order status) and the sync loop that fixes it."""
    from cronloop.demos.seed000 import main as seed000_main

    seed000_main(seed)
