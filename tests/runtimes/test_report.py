"""The runtimes' fast report and handle constructors build exactly what the checked ones do."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import UTC, datetime
from pathlib import Path

from cronloop.api.phase import Phase
from cronloop.runtimes.report import AttemptHandle, AttemptReport


def test_unchecked_report_equals_the_checked_one_field_for_field() -> None:
    now = datetime.now(UTC)
    values: dict[str, object] = {
        "attempt_id": "a1",
        "session": "s1",
        "seq": 2,
        "phase": Phase.FAILED,
        "reason": "NonZeroExit",
        "message": "exited with code 3",
        "exit_code": 3,
        "signal": None,
        "signal_name": None,
        "pid": 4242,
        "process_start_time": 1.5,
        "started_at": now,
        "finished_at": now,
        "reported_at": now,
        "log_dropped_bytes": 7,
    }
    fields = [f.name for f in dataclasses.fields(AttemptReport)]
    assert sorted(inspect.signature(AttemptReport._unchecked).parameters) == sorted(fields)
    fast = AttemptReport._unchecked(**values)  # type: ignore[arg-type]
    checked = AttemptReport(**values)  # type: ignore[arg-type]
    assert fast == checked
    assert vars(fast) == vars(checked)
    assert fast.terminal


def test_unchecked_handle_equals_the_checked_one() -> None:
    fields = [f.name for f in dataclasses.fields(AttemptHandle)]
    assert sorted(inspect.signature(AttemptHandle._unchecked).parameters) == sorted(fields)
    values: dict[str, object] = {
        "attempt_id": "a1",
        "session": "s1",
        "log_path": Path("/tmp/a1.log"),
        "pid": None,
        "pgid": None,
        "process_start_time": None,
    }
    fast = AttemptHandle._unchecked(**values)  # type: ignore[arg-type]
    assert fast == AttemptHandle(**values)  # type: ignore[arg-type]
    assert vars(fast) == vars(AttemptHandle(**values))  # type: ignore[arg-type]
