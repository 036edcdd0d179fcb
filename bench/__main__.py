"""Run benchmark suites and record them: ``python -m bench [SUITE ...] [--quick] [--no-write]``.

With no suite names every suite in ``SUITES`` runs. Each suite's table is printed and written
into its own section of docs/benchmarks.md (other sections are kept).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.harness import Comparison, render_markdown, write_section

SUITES = [
    "sync_looper",
    "sync_workqueue",
    "sync_timer",
    "store_writes",
    "runtime_process",
    "runtime_inline",
    "trigger",
    "scale_cronjobs",
]


def _table(suite: str, rows: list[Comparison]) -> Table:
    table = Table(title=suite)
    for col in ("benchmark", "metric", "cronloop", "baseline", "ratio", "target", "met"):
        table.add_column(col)
    for row in rows:
        ratio = row.ratio
        table.add_row(
            row.name,
            f"{row.metric} ({row.unit})",
            f"{row.cronloop.median:,.4g}",
            f"{row.baseline.subject}: {row.baseline.median:,.4g}" if row.baseline else "-",
            f"{ratio:.2f}x" if ratio is not None else "-",
            "-" if row.target is None else f"{row.target:g}",
            {None: "-", True: "[green]yes", False: "[red]no"}[row.met],
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("suites", nargs="*", help=f"suites to run (default: all of {SUITES})")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for smoke runs")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = parser.parse_args()
    console = Console()
    for suite in args.suites or SUITES:
        module = importlib.import_module(f"bench.{suite}")
        console.print(f"[bold]running {suite}[/bold]{' (quick)' if args.quick else ''} ...")
        result: Any = module.run(args.quick)
        rows: list[Comparison] = asyncio.run(result) if inspect.iscoroutine(result) else result
        console.print(_table(suite, rows))
        if not args.no_write and not args.quick:
            runs = max((len(r.cronloop.samples) for r in rows), default=0)
            command = f".venv/bin/python -m bench {suite}"
            write_section(suite, render_markdown(suite, rows, command, runs))


if __name__ == "__main__":
    main()
