"""Shared test helpers for the runtimes: spec builders, a checking report recorder, and
bounded waits for processes to die (pidfd based, so no polling sleeps in tests)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import psutil

from cronloop.api.phase import Phase
from cronloop.runtimes.base import Runtime
from cronloop.runtimes.report import AttemptReport
from cronloop.runtimes.spec import AttemptSpec, StepSettings

WAIT = 15.0
"""Upper bound for any single wait in these tests (seconds)."""


def make_spec(tmp_path: Path, settings: StepSettings, **overrides: object) -> AttemptSpec:
    """An AttemptSpec with sensible defaults (attempt ``a1``), logging to
    ``tmp_path/<attempt_id>.log``; keyword arguments override any field."""
    attempt_id = str(overrides.get("attempt_id", "a1"))
    fields: dict[str, object] = {
        "attempt_id": attempt_id,
        "session": "s1",
        "job": "job",
        "subjob": "job-eu",
        "target": "eu",
        "step": "main",
        "attempt": 1,
        "settings": settings,
        "log_path": tmp_path / f"{attempt_id}.log",
    }
    fields.update(overrides)
    return AttemptSpec(**fields)  # type: ignore[arg-type]


class Recorder:
    """A report callback that checks the delivery guarantees as reports arrive.

    Per attempt: seq goes 1, 2, ...; nothing follows a terminal report; the callback is never
    entered twice at once (it yields to the loop while "busy" to give overlaps a chance).
    """

    def __init__(self) -> None:
        self.reports: dict[str, list[AttemptReport]] = defaultdict(list)
        self.busy: set[str] = set()
        self.violations: list[str] = []

    async def __call__(self, report: AttemptReport) -> None:
        key = report.attempt_id
        if key in self.busy:
            self.violations.append(f"{key}: concurrent delivery of seq {report.seq}")
        self.busy.add(key)
        seen = self.reports[key]
        if seen and seen[-1].terminal:
            self.violations.append(f"{key}: seq {report.seq} after a terminal report")
        if report.seq != len(seen) + 1:
            self.violations.append(f"{key}: seq {report.seq} after {len(seen)} reports")
        seen.append(report)
        for _ in range(3):
            await asyncio.sleep(0)
        self.busy.discard(key)

    def phases(self, attempt_id: str) -> list[Phase]:
        return [r.phase for r in self.reports[attempt_id]]

    def check(self, attempt_id: str) -> AttemptReport:
        """Assert the attempt's reports were well-formed and return the terminal one."""
        assert self.violations == []
        seen = self.reports[attempt_id]
        assert [r.seq for r in seen] == list(range(1, len(seen) + 1))
        assert sum(r.terminal for r in seen) == 1
        assert seen[-1].terminal
        return seen[-1]


async def finish(runtime: Runtime, attempt_id: str, bound: float = WAIT) -> AttemptReport:
    """Wait (at most ``bound`` seconds, fake ones under looptime) for the terminal report."""
    async with asyncio.timeout(bound):
        return await runtime.wait(attempt_id)


async def read_until(runtime: Runtime, attempt_id: str, *needles: bytes) -> bytes:
    """Follow the attempt's log until every one of ``needles`` appears; return what was read."""
    seen = b""
    async with asyncio.timeout(WAIT):
        async for chunk in runtime.logs(attempt_id, follow=True):
            seen += chunk
            if all(needle in seen for needle in needles):
                return seen
    raise AssertionError(f"log ended without all of {needles!r}: {seen!r}")


def gone(pid: int) -> bool:
    """True if ``pid`` no longer runs (absent or a zombie nobody reaps)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids: Sequence[int], timeout: float = WAIT) -> list[int]:
    """Block until every pid has exited (pidfd readiness), at most ``timeout``; return the
    pids still running."""
    fds: dict[int, int] = {}
    try:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                fds[os.pidfd_open(pid)] = pid
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        pending = set(fds)
        deadline = time.monotonic() + timeout
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for fd, _ in poller.poll(remaining * 1000):
                pending.discard(fd)
                poller.unregister(fd)
        return sorted(fds[fd] for fd in pending)
    finally:
        for fd in fds:
            os.close(fd)


async def await_gone(pids: Sequence[int]) -> list[int]:
    """:func:`wait_gone` off the event loop."""
    return await asyncio.to_thread(wait_gone, list(pids))
