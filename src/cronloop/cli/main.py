"""The ``cronloop`` command line: ``up`` runs the scheduler; the other commands talk to it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast

import typer

from cronloop import __version__

app = typer.Typer(
    name="cronloop",
    help="A distributed cron and job scheduler built on the sync loop.",
    no_args_is_help=True,
    add_completion=False,
)

_EXAMPLES = Path("examples")


@app.command()
def up(
    spec_dir: Annotated[
        list[Path] | None,
        typer.Option(
            "--spec-dir",
            "-f",
            help="Spec file or directory to apply and watch (repeatable). Default: ./examples.",
        ),
    ] = None,
    state_dir: Annotated[
        Path, typer.Option(help="Where the database, logs and credentials live.")
    ] = Path(".cronloop"),
    host: Annotated[str, typer.Option(help="Address the API listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port the API listens on.")] = 8086,
    watch: Annotated[bool, typer.Option(help="Re-apply spec files when they change.")] = True,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Do not print run phase changes.")
    ] = False,
    max_cpu_percent: Annotated[
        float | None,
        typer.Option(help="Delay (AtLeastOnce) or skip (AtMostOnce) due runs above this CPU %."),
    ] = None,
    max_memory_percent: Annotated[
        float | None, typer.Option(help="The same, for memory in use (%).")
    ] = None,
    max_load_per_core: Annotated[
        float | None, typer.Option(help="The same, for the 1-minute load average per core.")
    ] = None,
    loop: Annotated[
        str, typer.Option(help="Event loop: auto (uvloop when installed), asyncio or uvloop.")
    ] = "auto",
) -> None:
    """Run the scheduler: store, controllers, runtimes and API in one process."""
    from pydantic import ValidationError

    from cronloop.cli.eventloop import LoopName, loop_factory
    from cronloop.cli.up import UpOptions, run_up
    from cronloop.controllers import AdmissionLimits

    try:
        limits = AdmissionLimits(
            max_cpu_percent=max_cpu_percent,
            max_memory_percent=max_memory_percent,
            max_load1_per_core=max_load_per_core,
        )
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = str(problem["loc"][0]).replace("_", "-").replace("load1-", "load-")
        typer.echo(f"error: --{field}: {problem['msg']}", err=True)
        raise typer.Exit(2) from None

    try:
        loop_factory(cast(LoopName, loop))
    except ValueError as exc:
        typer.echo(f"error: --loop: {exc}", err=True)
        raise typer.Exit(2) from None

    dirs = tuple(spec_dir) if spec_dir else ((_EXAMPLES,) if _EXAMPLES.is_dir() else ())
    for d in dirs:
        if not d.exists():
            typer.echo(f"error: spec path {d} does not exist", err=True)
            raise typer.Exit(2)
    run_up(
        UpOptions(
            state_dir=state_dir,
            spec_dirs=dirs,
            host=host,
            port=port,
            watch=watch,
            quiet=quiet,
            limits=limits,
            loop=cast(LoopName, loop),
        )
    )


@app.command()
def version() -> None:
    """Print cronloop's version."""
    typer.echo(__version__)


@app.command()
def demo(
    seed: Annotated[int, typer.Option(help="Random seed of the interleaving.")] = 7,
) -> None:
    """Show the seed-000 bug (out-of-order status) and the sync loop that fixes it."""
    from cronloop.demos.seed000 import main as seed000_main

    seed000_main(seed)


def _register_client_commands() -> None:
    from cronloop.cli.commands import register

    register(app)


_register_client_commands()
