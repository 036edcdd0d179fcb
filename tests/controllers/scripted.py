"""A runtime whose attempts do nothing until the test reports for them.

The Job controller is the subject of the tests that use it: the test decides which reports
arrive, in which order, duplicated or stale, and when.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

from cronloop.api import Phase
from cronloop.runtimes import (
    AttemptHandle,
    AttemptReport,
    AttemptSpec,
    Reason,
    RecoveryRecord,
    ReportCallback,
    Runtime,
    UnknownAttemptError,
)


class ScriptedRuntime(Runtime):
    def __init__(self) -> None:
        self.started: dict[str, tuple[AttemptSpec, ReportCallback]] = {}
        self.cancelled: list[str] = []
        self.changed = asyncio.Event()

    async def start(self, spec: AttemptSpec, report: ReportCallback) -> AttemptHandle:
        self.started[spec.attempt_id] = (spec, report)
        self.changed.set()
        return AttemptHandle(
            attempt_id=spec.attempt_id, session=spec.session, log_path=spec.log_path
        )

    def report(
        self, attempt_id: str, seq: int, phase: Phase, *, session: str | None = None
    ) -> None:
        spec, callback = self.started[attempt_id]
        reason = Reason.STARTED if phase is Phase.RUNNING else Reason.COMPLETED
        callback(
            AttemptReport(
                attempt_id=attempt_id,
                session=session or spec.session,
                seq=seq,
                phase=phase,
                reason=reason,
                reported_at=datetime.now(UTC),
            )
        )

    async def cancel(self, attempt_id: str, *, grace: float, reason: str = "") -> None:
        if attempt_id not in self.started:
            raise UnknownAttemptError(attempt_id)
        self.cancelled.append(attempt_id)

    async def wait(self, attempt_id: str) -> AttemptReport:
        raise UnknownAttemptError(attempt_id)

    def logs(self, attempt_id: str, *, follow: bool = False) -> AsyncIterator[bytes]:
        raise UnknownAttemptError(attempt_id)

    async def recover(
        self, records: Sequence[RecoveryRecord], *, grace: float = 5.0
    ) -> list[AttemptReport]:
        return [
            AttemptReport(
                attempt_id=r.attempt_id,
                session=r.session,
                seq=r.last_seq + 1,
                phase=Phase.LOST,
                reason=Reason.PROCESS_GONE,
                reported_at=datetime.now(UTC),
            )
            for r in records
        ]

    async def aclose(self) -> None:
        return None
