"""The writer process: it ends with its parent, and its death is an error, never a hang."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from cronloop.store import SQLiteStore, StoredObject
from cronloop.store._writer_process import WriterDied, WriterProcess

CHILD = """
import asyncio, sys
from cronloop.store import SQLiteStore, StoredObject

async def main():
    store = await SQLiteStore.open(sys.argv[1], writer="process")
    await store.create_many([StoredObject("Job", f"j{i}") for i in range(100)])
    writer = store._writer._process.pid
    print(writer, flush=True)
    await asyncio.sleep(600)  # until killed

asyncio.run(main())
"""


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


async def _count(db: Path) -> tuple[int, int]:
    async with await SQLiteStore.open(db, writer="process") as store:
        listed = await store.list("Job")
        return len(listed.items), listed.revision


@pytest.mark.slow
def test_the_writer_ends_when_its_parent_is_killed(tmp_path: Path) -> None:
    db = tmp_path / "killed.db"
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db)], stdout=subprocess.PIPE, text=True
    ) as parent:
        try:
            assert parent.stdout is not None
            writer = int(parent.stdout.readline())  # the child prints it once it has written
            assert psutil.pid_exists(writer)
            os.kill(parent.pid, signal.SIGKILL)
            parent.wait(30)
            assert _gone(writer, 30), "the writer outlived its parent"
        finally:
            if parent.poll() is None:
                parent.kill()
    assert asyncio.run(_count(db)) == (100, 100)


@pytest.mark.slow
async def test_a_dead_writer_fails_writes_instead_of_hanging(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "dead.db", writer="process")
    try:
        await store.create(StoredObject("Job", "before"))
        process = store._writer._process  # type: ignore[union-attr]
        assert process is not None
        process.kill()
        await asyncio.wait_for(process.wait(), 30)
        with pytest.raises(WriterDied, match="writer process ended"):
            async with asyncio.timeout(30):
                await store.create(StoredObject("Job", "after"))
        assert [o.name for o in (await store.list("Job")).items] == ["before"]
    finally:
        await store.close()


@pytest.mark.slow
async def test_the_writer_outlives_a_signal_to_the_process_group(tmp_path: Path) -> None:
    """Ctrl-C or a service manager's SIGTERM reaches the writer too; the parent decides when it
    ends, so writes after the signal still commit."""
    store = await SQLiteStore.open(tmp_path / "signalled.db", writer="process")
    try:
        process = store._writer._process  # type: ignore[union-attr]
        assert process is not None
        await store.create(StoredObject("Job", "before"))
        os.kill(process.pid, signal.SIGINT)
        os.kill(process.pid, signal.SIGTERM)
        async with asyncio.timeout(30):
            await store.create(StoredObject("Job", "after"))
        assert process.returncode is None
        names = [o.name for o in (await store.list("Job")).items]
        assert sorted(names) == ["after", "before"]
    finally:
        await store.close()
    assert process.returncode == 0


@pytest.mark.slow
async def test_an_answer_that_cannot_be_read_fails_the_writer_not_the_loop(
    tmp_path: Path,
) -> None:
    """A frame the parent cannot read puts it out of step with the writer: what is pending
    fails, later writes fail at once, and the process is ended."""
    store = await SQLiteStore.open(tmp_path / "garbled.db", writer="process")
    try:
        writer = store._writer
        assert isinstance(writer, WriterProcess)
        await store.create(StoredObject("Job", "before"))
        pending = asyncio.get_running_loop().create_future()
        writer._pending[10_000] = pending
        answers = writer._answers
        assert answers is not None
        answers.pipe_data_received(1, (5).to_bytes(8, "big") + b"junk!")
        with pytest.raises(WriterDied, match="before it answered"):
            await pending
        process = writer._process
        assert process is not None
        async with asyncio.timeout(30):
            await process.wait()
        # Still the reason, after the process's end was seen too.
        with pytest.raises(WriterDied, match="could not be read"):
            await store.create(StoredObject("Job", "after"))
    finally:
        await store.close()
    assert (await _count(tmp_path / "garbled.db")) == (1, 1)
