"""Shared machinery for benchmarks: repeat, take medians, compare with a baseline, write docs.

A suite is a module ``bench/<name>.py`` with ``async def run(quick: bool) -> list[Comparison]``
or a plain ``def run(quick: bool) -> list[Comparison]``. Each :class:`Comparison` holds the
cronloop measurement and the baseline measured *in the same run*; the harness prints them as a
table of medians and ratios and rewrites that suite's section of ``docs/benchmarks.md``.

Machines are noisy, so every number is the median of several runs and the headline is the
ratio to the baseline, never a single absolute time.
"""

from __future__ import annotations

import platform
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Comparison", "Measurement", "median_of", "render_markdown", "timed", "write_section"]

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


@dataclass(frozen=True)
class Measurement:
    """The median of several runs of one subject, plus the raw samples."""

    subject: str
    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


@dataclass(frozen=True)
class Comparison:
    """One row: cronloop against its baseline on the same metric.

    ``higher_is_better`` says how to read the metric (throughput: True, latency: False).
    ``ratio`` is ``cronloop / baseline`` for throughput and ``baseline / cronloop`` for costs,
    so 1.0 means parity, above 1 cronloop is better and 0.5 means half as good.
    ``target`` is the ratio (or absolute value, see ``target_absolute``) the issue asks for.
    """

    name: str
    metric: str
    unit: str
    cronloop: Measurement
    baseline: Measurement | None
    higher_is_better: bool = True
    target: float | None = None
    target_absolute: bool = False
    notes: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline.median == 0 or self.cronloop.median == 0:
            return None
        if self.higher_is_better:
            return self.cronloop.median / self.baseline.median
        return self.baseline.median / self.cronloop.median

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        if self.target_absolute:
            value = self.cronloop.median
            return value >= self.target if self.higher_is_better else value <= self.target
        ratio = self.ratio
        return None if ratio is None else ratio >= self.target


def median_of(runs: int, fn: Callable[[], float]) -> tuple[float, ...]:
    """Call ``fn`` ``runs`` times and return its results (each one run's metric)."""
    return tuple(fn() for _ in range(runs))


def timed(fn: Callable[[], object]) -> float:
    """Wall-clock seconds taken by one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def render_markdown(suite: str, rows: list[Comparison], command: str, runs: int) -> str:
    """The markdown section for one suite: a table of medians and ratios."""
    lines = [
        f"## {suite}",
        "",
        (
            f"Reproduce: `{command}` (median of {runs} runs; "
            f"{platform.python_implementation()} {platform.python_version()}, "
            f"{platform.machine()}, measured {time.strftime('%Y-%m-%d')})."
        ),
        "",
        "| benchmark | metric | cronloop | baseline | baseline value | ratio | target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        base = row.baseline
        ratio = row.ratio
        if row.target is None:
            target = "-"
        elif row.target_absolute:
            target = f"{'>=' if row.higher_is_better else '<='} {_fmt(row.target)} {row.unit}"
        else:
            target = f">= {row.target:g}x"
        met = {None: "-", True: "yes", False: "**no**"}[row.met]
        lines.append(
            f"| {row.name} | {row.metric} ({row.unit}) | {_fmt(row.cronloop.median)} | "
            f"{base.subject if base else '-'} | {_fmt(base.median) if base else '-'} | "
            f"{f'{ratio:.2f}x' if ratio is not None else '-'} | {target} | {met} |"
        )
    notes = [f"- **{r.name}**: {r.notes}" for r in rows if r.notes]
    extras = [
        f"- **{r.name}**: " + ", ".join(f"{k} = {v}" for k, v in r.extra.items())
        for r in rows
        if r.extra
    ]
    if notes or extras:
        lines += ["", *notes, *extras]
    return "\n".join(lines) + "\n"


_HEADER = """# Benchmarks

Every number is a median of several runs on the machine named in each section, measured in
the same run as its baseline; ratios are "cronloop relative to the baseline", where 1.0 is
parity and higher is better for cronloop. Run all suites with `make bench`, or one suite with
the command shown in its section. Machines are noisy: compare ratios, not absolute times.
"""


def write_section(suite: str, markdown: str, path: Path = DOCS) -> None:
    """Replace (or append) this suite's section in docs/benchmarks.md, keeping the others."""
    start, end = f"<!-- suite:{suite} -->", f"<!-- /suite:{suite} -->"
    block = f"{start}\n{markdown}{end}\n"
    text = path.read_text() if path.exists() else _HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.DOTALL)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text + "\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
