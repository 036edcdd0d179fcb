"""cronloop: a distributed cron and job scheduler built on the sync loop.

The layers, bottom-up (an import only points down):

- :mod:`cronloop.sync` -- Looper, KeyedLooper, WorkQueue, rate limiters, parallelize,
  Timer, StateMachine. Depends on nothing else in cronloop.
- :mod:`cronloop.api` -- resource types (CronJob, Job, SubJob), validation, phases.
- :mod:`cronloop.store` -- persistence with versions and a change feed.
- :mod:`cronloop.runtimes` -- where attempts run (inline, process, ...).
- :mod:`cronloop.controllers` -- reconcile loops that drive actual state to desired state.
- :mod:`cronloop.cli` -- the ``cronloop`` command.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
