"""The CronJob controller's plan shortcuts give exactly what the planner gives.

``CronJobController._plan`` answers from its memo of the next scheduled time when nothing can
be due, and when exactly that time is due and on time; everything else goes to
``plan_for_cronjob``. Here both are asked at a random walk of instants over random schedules
and policies, the cursor moving as the controller moves it, and must agree every time.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from cronloop.api import CronJob, CronJobStatus, MissedRunPlan, plan_for_cronjob
from cronloop.controllers import (
    CronJobController,
    CronJobStatusRecord,
    SystemClock,
    dump_model,
    to_stored,
)
from cronloop.store import new_uid

START = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # near a DST change in Europe
SCHEDULES = [
    "* * * * *",
    "*/5 * * * * *",
    "30 1 * * *",
    "0 0 29 2 *",
    "@every 90s",
    "@at 2026-03-29T00:30:00.250+00:00",
    "@at 2026-03-28T22:00:00Z",
]


class _Unused:
    """The controller's store and starter: never reached by ``_plan`` and ``_compile``."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"_plan touched {name}")


def _key(plan: MissedRunPlan) -> tuple[object, ...]:
    return (
        plan.start,
        plan.skipped,
        dict(plan.skipped_counts),
        plan.due_count,
        plan.last_considered,
        plan.next_wake,
    )


@settings(max_examples=150, deadline=None)
@given(
    schedule=st.sampled_from(SCHEDULES),
    zone=st.sampled_from(["UTC", "Europe/Berlin"]),
    catch_up=st.sampled_from(["None", "Latest", "All"]),
    guarantee=st.sampled_from(["AtLeastOnce", "AtMostOnce"]),
    deadline=st.sampled_from([None, 30, 600]),
    misfire=st.sampled_from([1, 60]),
    steps=st.lists(st.integers(0, 4 * 3600 * 1000), min_size=1, max_size=25),
)
def test_the_shortcuts_agree_with_the_planner(
    schedule: str,
    zone: str,
    catch_up: str,
    guarantee: str,
    deadline: int | None,
    misfire: int,
    steps: list[int],
) -> None:
    spec: dict[str, Any] = {
        "schedule": schedule,
        "timeZone": zone,
        "catchUp": catch_up,
        "guarantee": guarantee,
        "misfireThresholdSeconds": misfire,
        "jobTemplate": {"main": {"runtime": "inline", "callable": "m:f"}},
    }
    if deadline is not None:
        spec["startingDeadlineSeconds"] = deadline
    cronjob = CronJob.model_validate(
        {
            "apiVersion": "cronloop.dev/v1",
            "kind": "CronJob",
            "metadata": {"name": "c"},
            "spec": spec,
        }
    )
    obj = dataclasses.replace(
        to_stored(cronjob), uid=new_uid(), generation=1, resource_version=1, created_at=START
    )
    controller = CronJobController(_Unused(), clock=SystemClock(), starter=_Unused())  # type: ignore[arg-type]
    compiled = controller._compile(obj)
    status = CronJobStatus()
    now = START
    for step in sorted(steps):
        now = START + timedelta(milliseconds=step)
        record = cast(CronJobStatusRecord, dump_model(status))
        got = controller._plan(obj, compiled, record, now)
        want = plan_for_cronjob(compiled.cronjob, now, status=status)
        assert _key(got) == _key(want), (schedule, now, status.last_schedule_time)
        # Settle the plan as a committed pass does: the cursor moves to the newest time
        # handled, and the memo keeps the next wake for the new cursor.
        cursor = want.last_considered or status.last_schedule_time
        status = status.model_copy(update={"last_schedule_time": cursor})
        memo_cursor = cursor if cursor is not None and cursor > START else START
        controller._next_times["c"] = (obj.uid, obj.generation, memo_cursor, want.next_wake)
