"""kill -9 of a real ``cronloop up`` at random moments loses no run and duplicates none.

Four CronJobs fire every second, two fanning out to two targets and two with one target (a
run kept as one record, its sub-job in its Job), each target's process writing a marker file
when it starts and another when it finishes. The scheduler is killed with SIGKILL at a
seeded random moment, restarted, killed again, several times, then run once more and stopped
gracefully. Afterwards the store and the markers must show:

- one run per scheduled time, and under AtLeastOnce + catchUp All no scheduled time missing
  between the first and the last one handled;
- under AtMostOnce, no target ever started twice (one start marker at most);
- no sub-job with two successful attempts, and no attempt left running;
- no process of ours still alive (orphans were found and stopped on restart).

The random pause before each kill is the experiment itself (where the kill lands), not a wait
for something to happen; every wait for the process is bounded.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import psutil
import pytest

from cronloop.api import CronJob, Job, Phase, SubJob
from cronloop.controllers import list_subjobs, typed
from cronloop.store import open_store
from tests.ports import free_port

SPEC = """
apiVersion: cronloop.dev/v1
kind: CronJob
metadata: {{name: {name}}}
spec:
  schedule: "* * * * * *"
  catchUp: All
  guarantee: {guarantee}
  successfulJobsHistoryLimit: 100000
  failedJobsHistoryLimit: 100000
  jobTemplate:
    targets: {targets}
    main:
      runtime: process
      argv:
        - {python}
        - -c
        - |
          import os, pathlib, time
          marks = pathlib.Path(os.environ["MARK_DIR"])
          name = os.environ["CRONLOOP_ATTEMPT_ID"].replace("/", "_")
          (marks / (name + ".start")).write_text(str(time.time()))
          time.sleep(0.3)
          (marks / (name + ".done")).write_text(str(time.time()))
      env: {{MARK_DIR: "{marks}"}}
"""

#: (name, guarantee, targets): with two targets, and with one (kept in its run).
CRONJOBS = (
    ("alo", "AtLeastOnce", "[a, b]"),
    ("amo", "AtMostOnce", "[a, b]"),
    ("alo1", "AtLeastOnce", "[solo]"),
    ("amo1", "AtMostOnce", "[solo]"),
)


def _start(root: Path, port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cronloop.cli",
            "up",
            "--quiet",
            "--no-watch",
            "--spec-dir",
            str(root / "specs"),
            "--state-dir",
            str(root / "state"),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=root,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if "cronloop is up" in line:
            return proc
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise AssertionError(f"cronloop up did not come up (exit {proc.wait(10)})")


def _ours(marks: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("MARK_DIR") == str(marks):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


async def _read(path: Path) -> tuple[dict[str, CronJob], list[Job], list[SubJob]]:
    store = await open_store(path)
    try:
        cronjobs = {o.name: typed(o, CronJob) for o in (await store.list("CronJob")).items}
        jobs = [typed(o, Job) for o in (await store.list("Job")).items]
        # With the sub-jobs one-target runs keep in their Job.
        subjobs = [typed(o, SubJob) for o in (await list_subjobs(store)).items]
    finally:
        await store.close()
    return cronjobs, jobs, subjobs


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_kill_dash_nine_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    rng = random.Random(20261123)
    marks = tmp_path / "marks"
    marks.mkdir()
    (tmp_path / "specs").mkdir()
    for name, guarantee, targets in CRONJOBS:
        (tmp_path / "specs" / f"{name}.yaml").write_text(
            SPEC.format(
                name=name,
                guarantee=guarantee,
                targets=targets,
                python=sys.executable,
                marks=marks,
            )
        )
    port = free_port()
    for _ in range(6):
        proc = _start(tmp_path, port)
        time.sleep(rng.uniform(0.3, 2.5))  # where the kill lands is the experiment
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()
    proc = _start(tmp_path, port)
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    if proc.stdout is not None:
        proc.stdout.close()

    cronjobs, jobs, subjobs = asyncio.run(_read(tmp_path / "state" / "cronloop.db"))

    for name, _, _ in CRONJOBS:
        runs = [j for j in jobs if j.status.cron_job and j.status.cron_job.name == name]
        times = Counter(j.status.scheduled_time for j in runs)
        assert runs
        assert all(n == 1 for n in times.values()), times.most_common(2)
        last = cronjobs[name].status.last_schedule_time
        assert last is not None
        if name.startswith("alo"):
            first = min(t for t in times if t is not None)
            expected = {
                first + timedelta(seconds=i) for i in range(int((last - first).total_seconds()) + 1)
            }
            assert expected <= set(times), f"missing runs: {sorted(expected - set(times))[:5]}"
            assert all(j.status.phase is not Phase.SKIPPED for j in runs)

    kept = [s for s in subjobs if s.metadata.name.startswith(("alo1-", "amo1-"))]
    assert kept, "no one-target run was seen"
    starts = Counter(p.name.split("#")[0] for p in marks.glob("*.start"))
    for sub in subjobs:
        assert sum(1 for a in sub.status.attempts if a.phase is Phase.SUCCEEDED) <= 1
        assert all(a.phase.terminal for a in sub.status.attempts), sub.metadata.name
        if sub.metadata.name.startswith("amo"):
            assert len(sub.status.attempts) <= 1
            key = f"{sub.spec.job.name}_{sub.metadata.name}"
            assert starts.get(key, 0) <= 1, f"{key} started {starts[key]} times"
    assert _ours(marks) == [], "an attempt's process outlived the scheduler"
    assert os.listdir(marks), "no job ever ran"
