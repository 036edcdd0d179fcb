"""``cronloop up``: one instance per state directory, and what it prints about runs."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cronloop.api import Attempt, Phase, StepName, SubJobStatus, load_resources
from cronloop.cli.up import (
    LOCK_FILE,
    RunPrinter,
    StateDirInUse,
    _print_runs,
    hold_state_dir,
    up_console,
)
from cronloop.controllers import to_stored
from cronloop.store import EventType, ListResult, Store, StoredObject, WatchEvent
from tests.ports import free_port
from tests.server.builders import add_subjob, set_job_status, set_subjob_status

BOUND = 30.0  # seconds any process start or wait may take before the test fails

_HOLDER = """
import sys
from pathlib import Path
from cronloop.cli.up import hold_state_dir
with hold_state_dir(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes it, or kills this process
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A process that holds ``tmp_path / "state"`` the way a running ``cronloop up`` does."""
    state = tmp_path / "state"
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(state)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        # "held" comes in one flushed write: once readable, the line (or EOF, if it failed)
        # is there, so readline() cannot block.
        readable, _, _ = select.select([process.stdout], [], [], BOUND)
        assert readable, "the holder did not take the lock in time"
        assert process.stdout.readline() == "held\n"
        yield process
    finally:
        process.kill()
        process.wait(BOUND)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()


def test_a_second_up_on_the_same_state_dir_refuses_and_touches_nothing(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    state = tmp_path / "state"
    credentials = state / "credentials.json"
    credentials.write_text(json.dumps({"server": "http://127.0.0.1:8086", "token": "t0"}))
    before = sorted(p.name for p in state.iterdir())
    port = str(free_port())
    result = subprocess.run(
        [sys.executable, "-m", "cronloop.cli", "up", "--state-dir", str(state), "--port", port],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert result.stderr == (
        f"error: state directory {state} is in use by another `cronloop up` (pid {holder.pid}): "
        "stop it first, or give this one another --state-dir\n"
    )
    # No store opened (so no recovery), no credentials rewritten.
    assert sorted(p.name for p in state.iterdir()) == before
    assert json.loads(credentials.read_text())["server"] == "http://127.0.0.1:8086"


def test_the_lock_goes_with_its_process_even_on_kill_9(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    state = tmp_path / "state"
    with pytest.raises(StateDirInUse, match=f"pid {holder.pid}"), hold_state_dir(state):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(BOUND)
    with hold_state_dir(state):
        assert (state / LOCK_FILE).read_text() == f"{os.getpid()}\n"


def test_a_second_lock_in_one_process_is_refused_too(tmp_path: Path) -> None:
    with (
        hold_state_dir(tmp_path),
        pytest.raises(StateDirInUse) as refused,
        hold_state_dir(tmp_path),
    ):
        pass
    assert str(refused.value).startswith(f"state directory {tmp_path} is in use")
    assert f"(pid {os.getpid()})" in str(refused.value)
    with hold_state_dir(tmp_path):  # released when the first one ended
        pass


def test_an_unnamed_holder_is_reported_as_unknown(tmp_path: Path) -> None:
    with hold_state_dir(tmp_path):
        (tmp_path / LOCK_FILE).write_text("")  # between the lock and the pid being written
        with pytest.raises(StateDirInUse, match="pid unknown"), hold_state_dir(tmp_path):
            pass


# ---- the run printer -------------------------------------------------------------------------

LONG = "a-run-whose-name-makes-its-phase-line-wider-than-eighty-cols"


def _job(name: str) -> str:
    return f"""
apiVersion: cronloop.dev/v1
kind: Job
metadata: {{name: {name}}}
spec:
  targets: [eu, us, ap]
  main: {{runtime: process, argv: [echo, hi]}}
"""


class _Output(io.StringIO):
    """What the console printed; ``changed`` is set at every write."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def write(self, text: str) -> int:
        self.changed.set()
        return super().write(text)

    async def wait_for(self, text: str) -> None:
        async with asyncio.timeout(BOUND):
            while text not in self.getvalue():
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def _printing(
    store: Store,
    output: _Output,
    snapshot: Callable[[], Awaitable[tuple[list[StoredObject], list[StoredObject], int]]]
    | None = None,
) -> AsyncIterator[None]:
    """``_print_runs`` to ``output`` while the block runs, then stopped."""
    printer = asyncio.create_task(_print_runs(store, up_console(output), snapshot))
    try:
        yield
    finally:
        printer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await printer


async def _create(store: Store, name: str) -> StoredObject:
    (job,) = load_resources(_job(name))
    return await store.create(to_stored(job))


async def test_up_prints_only_what_changes_while_it_runs(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _create(store, "finished-before")
    await set_job_status(store, "finished-before", phase=Phase.SUCCEEDED)
    await _create(store, "running-before")
    await set_job_status(store, "running-before", phase=Phase.RUNNING)
    listed = asyncio.Event()
    original = store.list

    async def list_then_tell(kind: str, **options: Any) -> ListResult:
        result = await original(kind, **options)
        if kind == "SubJob":
            listed.set()
        return result

    monkeypatch.setattr(store, "list", list_then_tell)
    output = _Output()
    async with _printing(store, output):
        async with asyncio.timeout(BOUND):
            await listed.wait()
        # What a restart does to runs that were already there: prune one, touch the other.
        await store.delete("Job", "finished-before")
        await set_job_status(store, "running-before", phase=Phase.RUNNING, reason="Touched")
        await _create(store, LONG)
        await set_job_status(store, LONG, phase=Phase.RUNNING)
        await set_job_status(store, "running-before", phase=Phase.SUCCEEDED)
        await output.wait_for("running-before Succeeded")
    lines = output.getvalue().splitlines()
    assert [line.split()[1:3] for line in lines] == [
        [LONG, "Pending"],
        [LONG, "Running"],
        ["running-before", "Succeeded"],
    ]
    # Whole lines, however narrow the (redirected) output's default width.
    assert all(line.endswith("(manual)") for line in lines), lines


async def test_the_printer_reports_a_failed_subjob_once_and_new_warnings_only(
    store: Store,
) -> None:
    job = await _create(store, "warned")
    job = await set_job_status(store, "warned", phase=Phase.RUNNING, warnings=("old warning",))
    output = _Output()
    printer = RunPrinter(up_console(output))
    printer.seed([job], [])
    printer.show(WatchEvent(EventType.MODIFIED, job, job.resource_version))
    assert output.getvalue() == ""
    job = await set_job_status(
        store, "warned", phase=Phase.RUNNING, warnings=("old warning", "new warning")
    )
    printer.show(WatchEvent(EventType.MODIFIED, job, job.resource_version))
    assert output.getvalue() == "    warning: new warning\n"
    printer.show(WatchEvent(EventType.DELETED, job, job.resource_version + 1))
    assert output.getvalue() == "    warning: new warning\n"

    sub = await add_subjob(store, job, "eu", attempts=[(Phase.RUNNING, None)])
    printer.show(WatchEvent(EventType.ADDED, sub, sub.resource_version))
    assert output.getvalue() == "    warning: new warning\n"
    failed = Attempt(
        number=1, step=StepName.MAIN, phase=Phase.FAILED, reason="Exited", message="code 3"
    )
    sub = await set_subjob_status(store, "warned-eu", attempts=(failed,), phase=Phase.FAILED)
    printer.show(WatchEvent(EventType.MODIFIED, sub, sub.resource_version))
    reported = "    warning: new warning\n    warned-eu failed Exited: code 3\n"
    assert output.getvalue() == reported
    again = await set_subjob_status(store, "warned-eu", message="still failed")
    assert again.resource_version > sub.resource_version  # news, were it not reported already
    printer.show(WatchEvent(EventType.MODIFIED, again, again.resource_version))
    assert output.getvalue() == reported


async def test_changes_older_than_the_seed_are_not_printed(store: Store) -> None:
    # `cronloop up` seeds the printer from the manager's cache, which may hold a run newer
    # than the first events watched from the listing's revision.
    await _create(store, "seen")
    running = await set_job_status(store, "seen", phase=Phase.RUNNING)
    succeeded = await set_job_status(store, "seen", phase=Phase.SUCCEEDED)
    output = _Output()
    printer = RunPrinter(up_console(output))
    printer.seed([succeeded], [])
    printer.show(WatchEvent(EventType.MODIFIED, running, running.resource_version))
    printer.show(WatchEvent(EventType.MODIFIED, succeeded, succeeded.resource_version))
    assert output.getvalue() == ""
    failed = await set_job_status(store, "seen", phase=Phase.FAILED)
    printer.show(WatchEvent(EventType.MODIFIED, failed, failed.resource_version))
    assert output.getvalue().split()[1:3] == ["seen", "Failed"]


async def test_the_printer_watches_from_the_snapshot_it_is_given(store: Store) -> None:
    await _create(store, "before")
    before = await set_job_status(store, "before", phase=Phase.SUCCEEDED)
    revision = await store.current_revision()
    listed = asyncio.Event()

    async def snapshot() -> tuple[list[StoredObject], list[StoredObject], int]:
        listed.set()
        return [before], [], revision

    output = _Output()
    async with _printing(store, output, snapshot):
        async with asyncio.timeout(BOUND):
            await listed.wait()
        await _create(store, "after")
        await set_job_status(store, "after", phase=Phase.RUNNING)
        await output.wait_for("after Running")
    assert [line.split()[1:3] for line in output.getvalue().splitlines()] == [
        ["after", "Pending"],
        ["after", "Running"],
    ]


async def test_the_printer_reports_a_kept_subjobs_failure_once(store: Store) -> None:
    # A one-target run keeps its sub-job in its Job: its failure is news all the same, and
    # one that had failed before the printer started is not.
    for name in ("before", "during"):
        (job,) = load_resources(_job(name).replace("[eu, us, ap]", "[eu]"))
        await store.create(to_stored(job))
    failed = SubJobStatus(
        phase=Phase.FAILED,
        attempts=(
            Attempt(number=1, step=StepName.MAIN, phase=Phase.FAILED, reason="Exited", message="3"),
        ),
    )
    before = await set_job_status(store, "before", sub_job=failed)
    revision = await store.current_revision()

    async def snapshot() -> tuple[list[StoredObject], list[StoredObject], int]:
        return [before, await store.get("Job", "during")], [], revision

    output = _Output()
    async with _printing(store, output, snapshot):
        await set_job_status(store, "before", sub_job=failed, message="again")
        await set_job_status(store, "during", sub_job=failed)
        await set_job_status(store, "during", sub_job=failed, message="again")
        await set_job_status(store, "during", phase=Phase.FAILED, sub_job=failed)
        await output.wait_for("during Failed")
    lines = output.getvalue().splitlines()
    assert lines[0] == "    during-eu failed Exited: 3"
    assert [line.split()[1:3] for line in lines[1:]] == [["during", "Failed"]]
