"""A job's phase from its sub-jobs' phases, under its success policy, never moving backwards.

Rules (also in docs/api.md):

- ``required`` successes: ``All`` -> every sub-job, ``Any`` -> 1, ``AtLeast n`` -> ``n``.
- **Succeeded** as soon as ``required`` sub-jobs have succeeded.
- **Failed** as soon as success is impossible: the succeeded ones plus the ones still running
  cannot reach ``required``. (Which terminal phase a failed sub-job has -- Failed, Cancelled,
  TimedOut, Lost, Skipped -- does not matter: using it would make the job's phase depend on
  which sub-job reported first. A job is Cancelled or TimedOut by its own controller.)
- Otherwise the job is as far as its **furthest** sub-job: Preparing once any sub-job is
  preparing, Prepared once any has prepared, Running once any runs or has finished.
- The result is never lower than ``previous``, and a terminal ``previous`` is kept.

Succeeded and Failed are decided by counts that only grow (successes) or shrink (successes
plus live sub-jobs), so once either holds it holds for good: the final phase does not depend
on the order in which sub-jobs report.
"""

from __future__ import annotations

from collections.abc import Iterable

from cronloop.api.job import SuccessPolicy
from cronloop.api.phase import Phase

__all__ = ["aggregate_phase"]

_PROGRESS = (Phase.PENDING, Phase.PREPARING, Phase.PREPARED, Phase.RUNNING)


def aggregate_phase(
    policy: SuccessPolicy, sub_job_phases: Iterable[Phase], previous: Phase = Phase.PENDING
) -> Phase:
    """The job's phase given every sub-job's current phase (see the module docstring).

    With no sub-jobs nothing is known yet and ``previous`` is returned.
    """
    if previous.terminal:
        return previous
    phases = list(sub_job_phases)
    if not phases:
        return previous
    required = policy.required(len(phases))
    succeeded = sum(1 for p in phases if p is Phase.SUCCEEDED)
    live = sum(1 for p in phases if not p.terminal)
    if succeeded >= required:
        computed = Phase.SUCCEEDED
    elif succeeded + live < required:
        computed = Phase.FAILED
    else:
        computed = _PROGRESS[max(min(p.rank, Phase.RUNNING.rank) for p in phases)]
    return computed if computed.rank > previous.rank else previous
