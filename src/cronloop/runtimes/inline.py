"""The inline runtime: each attempt calls a Python function inside the controller's process.

``InlineSettings.callable`` names it as ``"module:function"``. A coroutine function runs as
a task on the loop; a plain function runs in a worker thread of a bounded pool. A function
that declares a ``ctx`` parameter receives an :class:`AttemptContext` (its target, shard,
attempt number, a ``log`` into the attempt's log file and a cancellation flag).

Stopping: an async function is cancelled (``CancelledError`` is raised inside it) at the
deadline or on :meth:`InlineRuntime.cancel`. A thread cannot be killed in Python, so a sync
function is only *asked* to stop (``ctx.cancelled`` turns true): the attempt is reported
``TimedOut`` at the deadline (``Cancelled`` after the grace period on cancel) and the thread
runs on until the function returns, holding its pool slot meanwhile; whatever it does after
that is discarded. Use the process runtime for work that must be stoppable by force.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import importlib
import inspect
import logging
import sys
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cronloop.api.phase import Phase
from cronloop.runtimes._tracking import (
    Attempt,
    TrackedRuntime,
    lost_report,
    note_recovery,
    utcnow,
)
from cronloop.runtimes.base import ReportCallback
from cronloop.runtimes.logfile import AttemptLog
from cronloop.runtimes.report import AttemptReport, Reason
from cronloop.runtimes.spec import AttemptSpec, InlineSettings, RecoveryRecord

__all__ = ["AttemptCancelledError", "AttemptContext", "InlineRuntime"]

_MESSAGE_LIMIT = 500

logger = logging.getLogger("cronloop.runtimes")


class AttemptCancelledError(Exception):
    """Raised by :meth:`AttemptContext.raise_if_cancelled` once the attempt is being stopped."""

    def __init__(self, attempt_id: str) -> None:
        super().__init__(f"attempt {attempt_id!r} is being stopped")
        self.attempt_id = attempt_id


class AttemptContext:
    """What an inline function may know about the attempt that runs it (its ``ctx``).

    Safe to use from the worker thread of a sync function.
    """

    def __init__(self, spec: AttemptSpec, log: AttemptLog, stop: threading.Event) -> None:
        self._spec = spec
        self._log = log
        self._stop = stop

    @property
    def attempt_id(self) -> str:
        """The attempt's unique id."""
        return self._spec.attempt_id

    @property
    def job(self) -> str:
        """The job's name."""
        return self._spec.job

    @property
    def subjob(self) -> str:
        """The sub-job's name."""
        return self._spec.subjob

    @property
    def target(self) -> str:
        """The target (region, host, shard...) this sub-job runs for."""
        return self._spec.target

    @property
    def shard_index(self) -> int | None:
        """The shard's index for sharded jobs, else None."""
        return self._spec.shard_index

    @property
    def step(self) -> str:
        """The step being run (``prepare`` or ``main``)."""
        return self._spec.step

    @property
    def attempt(self) -> int:
        """The attempt number, from 1."""
        return self._spec.attempt

    @property
    def cancelled(self) -> bool:
        """True once the attempt is being stopped (cancel or timeout): return soon."""
        return self._stop.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`AttemptCancelledError` if the attempt is being stopped."""
        if self._stop.is_set():
            raise AttemptCancelledError(self._spec.attempt_id)

    def log(self, *parts: object) -> None:
        """Write one line (``parts`` joined by spaces) to the attempt's log file."""
        self._log.write(" ".join(str(p) for p in parts).encode() + b"\n")


@dataclass(frozen=True)
class _Exited:
    """What a function that called ``sys.exit`` returns through our wrappers."""

    code: object


_Outcome = tuple[object, BaseException | None]
"""How a function ended: its result (an :class:`_Exited` after ``sys.exit``), or its error."""


class _InlineAttempt(Attempt):
    """An inline attempt's moving parts, all touched only from the event loop's thread.

    The stop flag, the log object and the give-up timer exist only once something needs them:
    the flag and the log when the function takes a ``ctx``, the log also when the runtime
    writes a note or a traceback or someone reads the log, the timer when a stop begins.
    """

    #: The ``ctx.cancelled`` flag (only for a function that takes ``ctx``).
    stop_flag: threading.Event | None = None
    #: (phase, reason, message) once a stop has begun.
    stopping: tuple[Phase, str, str] | None = None
    give_up_at: float | None = None
    give_up_handle: asyncio.TimerHandle | None = None
    deadline_handle: asyncio.TimerHandle | None = None
    #: The task of an async function (a sync one runs on a thread, see _ThreadRunners).
    work: asyncio.Task[None] | None = None
    is_async = False
    #: The async wrapper has begun (a cancel can now reach the function).
    entered = False
    #: The function has returned (or raised): there is nothing left to stop.
    returned = False
    #: Its terminal report has been decided; a late outcome is discarded.
    concluded = False

    def open_log(self) -> AttemptLog:
        """The attempt's log (created on first use; call it only on the event loop)."""
        log = self.log
        if log is None:
            log = self.log = AttemptLog.create(self.spec.log_path, self.spec.log_limit, lazy=True)
        return log

    def readable_log(self) -> AttemptLog | None:
        # An attempt that ended without a log object never wrote a byte: nothing to read.
        return self.log if self.concluded else self.open_log()

    def before_terminal(self) -> None:
        for handle in (self.deadline_handle, self.give_up_handle):
            if handle is not None:
                handle.cancel()
        if self.log is not None:
            self.log.close()


class _Plan:
    """How to call one function, worked out once: is it async, does it take ``ctx``, and
    which sets of keyword names does its signature accept."""

    __slots__ = ("accepted", "is_async", "signature", "takes_ctx")

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.is_async = _is_async(fn)
        try:
            self.signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):  # some builtins have no signature: call and see
            self.signature = None
        ctx = self.signature.parameters.get("ctx") if self.signature is not None else None
        self.takes_ctx = ctx is not None and ctx.kind is not inspect.Parameter.POSITIONAL_ONLY
        self.accepted: set[tuple[str, ...]] = set()

    def check(self, kwargs: Mapping[str, object]) -> None:
        """Raise :class:`TypeError` if the function does not accept these keyword arguments.

        Binding depends only on the names, so each set of names is bound once.
        """
        names = tuple(kwargs)
        if names in self.accepted:
            return
        if self.signature is not None:
            probe: dict[str, object] = dict.fromkeys(names)
            if self.takes_ctx:
                probe["ctx"] = None
            self.signature.bind(**probe)
        if len(self.accepted) < _ACCEPTED_LIMIT:
            self.accepted.add(names)


_ACCEPTED_LIMIT = 64


@functools.lru_cache(maxsize=1024)
def _cached_plan(fn: Callable[..., Any]) -> _Plan:
    return _Plan(fn)


def _plan(fn: Callable[..., Any]) -> _Plan:
    try:
        return _cached_plan(fn)
    except TypeError:  # unhashable: not cached
        return _Plan(fn)


_ThreadCall = tuple[
    Callable[..., _Outcome], tuple[Any, ...], Callable[[_InlineAttempt, _Outcome | None], None]
]
"""A call for a worker thread: run ``fn(*args)`` there, then ``on_done(attempt, outcome)``."""


class _ThreadRunners:
    """Runs calls on the pool's threads, at most ``limit`` at a time, in the order they came,
    without a pool work item per call.

    Hand-written on top of :class:`~concurrent.futures.ThreadPoolExecutor`, which still owns
    the threads: submitting one work item per call cost the event loop 4-14 µs when many
    short functions finish at once, most of it waiting on locks the workers hold (the pool's
    idle semaphore, each future's condition), against under 1 µs for a deque append. Instead
    up to ``limit`` runner items each take calls from a deque until it is empty and post
    every outcome to the loop. The number of runners is counted on the loop's thread only (a
    runner posts its exit to the loop), so no lock is needed: a call appended just as the
    last runner leaves is picked up by the runner that the loop starts when it hears of that
    exit.
    """

    def __init__(self, pool: concurrent.futures.Executor, limit: int) -> None:
        self._pool = pool
        self._limit = limit
        self._calls: collections.deque[tuple[_InlineAttempt, _ThreadCall]] = collections.deque()
        self._runners = 0
        self._closed = False

    def call(
        self,
        loop: asyncio.AbstractEventLoop,
        attempt: _InlineAttempt,
        call: _ThreadCall,
    ) -> None:
        """Run ``call`` for ``attempt`` on a thread; its ``on_done`` follows on the loop."""
        self._calls.append((attempt, call))
        if self._runners < self._limit:
            self._runners += 1
            self._pool.submit(self._drain, loop)

    def close(self) -> None:
        """Run no more calls; those not started yet end with the outcome None."""
        self._closed = True
        while self._calls:
            attempt, (_, _, on_done) = self._calls.popleft()
            on_done(attempt, None)

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        # In a worker thread: deque.popleft is atomic, the rest is this thread's own.
        try:
            while not self._closed:
                try:
                    attempt, (fn, args, on_done) = self._calls.popleft()
                except IndexError:
                    break
                _post(loop, on_done, attempt, fn(*args))
        finally:
            _post(loop, self._runner_left)

    def _runner_left(self) -> None:
        self._runners -= 1
        if self._calls and not self._closed and self._runners < self._limit:
            self._runners += 1
            self._pool.submit(self._drain, asyncio.get_running_loop())


def _post(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: object) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to tell
        loop.call_soon_threadsafe(callback, *args)


class InlineRuntime(TrackedRuntime[_InlineAttempt]):
    """Runs :class:`~cronloop.runtimes.spec.InlineSettings` steps in this process.

    :param max_workers: threads for sync functions (a sync function that ignores a timeout
        keeps its thread until it returns).
    :param shutdown_grace: the grace period :meth:`aclose` gives running attempts.
    :param retain_finished: how many finished attempts stay available to :meth:`wait` and
        :meth:`logs`.
    """

    _kind = "InlineRuntime"
    _label = "inline"
    _settings_type = InlineSettings

    def __init__(
        self, *, max_workers: int = 8, shutdown_grace: float = 5.0, retain_finished: int = 1024
    ) -> None:
        if max_workers < 1:
            raise ValueError(f"InlineRuntime max_workers must be >= 1, got {max_workers!r}")
        if not shutdown_grace >= 0:
            raise ValueError(
                f"InlineRuntime shutdown_grace must be >= 0 seconds, got {shutdown_grace!r}"
            )
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="cronloop-inline"
        )
        self._threads = _ThreadRunners(self._pool, max_workers)
        #: Tasks of async functions reported while still running (they swallowed a cancel).
        self._abandoned: set[asyncio.Task[None]] = set()
        super().__init__(shutdown_grace=shutdown_grace, retain_finished=retain_finished)

    # -- the contract --------------------------------------------------------------------

    async def recover(
        self, records: Sequence[RecoveryRecord], *, grace: float = 5.0
    ) -> list[AttemptReport]:
        """Report every record ``Lost``/``ProcessGone``: inline work died with its process."""
        message = "inline attempts run inside the controller process and ended with it"
        reports = []
        for record in records:
            self._check_recoverable(record)
            if record.log_path is not None:  # writing it blocks: off the event loop
                note = f"recovered after a restart: {message}"
                await asyncio.to_thread(note_recovery, record, note)
            reports.append(lost_report(record, Reason.PROCESS_GONE, message))
        return reports

    async def aclose(self) -> None:
        # Each attempt is reported by its give-up time at the latest; the margin is for delivery.
        await self._stop_running(self._shutdown_grace + 5.0)
        abandoned = list(self._abandoned)
        for work in abandoned:
            work.cancel()  # a second chance for tasks that swallowed the first cancel
        if abandoned:
            await asyncio.wait(abandoned, timeout=1.0)
        # Threads cannot be interrupted: do not wait for abandoned sync functions here.
        self._threads.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- one attempt ---------------------------------------------------------------------
    #
    # No driver task: start() looks the function up, starts its work (a task for an async
    # function, a call on a worker thread for a sync one) and posts Running before it
    # returns; the work's own end (the task's last step, the thread's posted outcome) posts
    # the terminal report, and a give-up timer posts it for work that outlives its grace.
    # A function whose module is not imported yet is imported on a worker thread first.

    def _new_attempt(self, spec: AttemptSpec, callback: ReportCallback) -> _InlineAttempt:
        return _InlineAttempt(spec, callback)

    def _launch(self, attempt: _InlineAttempt) -> None:
        settings = attempt.spec.settings
        assert isinstance(settings, InlineSettings)
        module_name, path = _parse(settings.callable)
        module = sys.modules.get(module_name)
        if module is None or getattr(module.__spec__, "_initializing", False):
            # Importing runs module code (or waits for another thread's import): on a worker
            # thread, in turn with the sync functions; start() waits for the first report.
            call = (_import, (module_name, path), self._imported)
            self._threads.call(asyncio.get_running_loop(), attempt, call)
            return
        try:
            found: Callable[..., Any] | Exception = _lookup(module, path)
        except Exception as exc:
            found = exc
        self._call(attempt, found)

    def _imported(self, attempt: _InlineAttempt, outcome: _Outcome | None) -> None:
        if outcome is None:
            found: object = ImportError("the runtime was closed before the import")
        else:
            result, error = outcome
            found = result if error is None else error
        if callable(found) or isinstance(found, Exception):
            self._call(attempt, found)
        else:  # a BaseException such as KeyboardInterrupt raised by the module's code
            self._call(attempt, ImportError(f"{type(found).__name__}: {found}"))

    def _call(self, attempt: _InlineAttempt, found: Callable[..., Any] | Exception) -> None:
        """Start the function (or report why it cannot be started) and post Running."""
        try:
            self._start_work(attempt, found)
        except Exception as exc:
            self._internal_error(attempt, exc)

    def _start_work(self, attempt: _InlineAttempt, found: Callable[..., Any] | Exception) -> None:
        spec = attempt.spec
        settings = spec.settings
        assert isinstance(settings, InlineSettings)
        if isinstance(found, Exception):
            message = _clip(f"cannot import {settings.callable!r}: {type(found).__name__}: {found}")
            log = attempt.open_log()
            log.note(message)
            _log_exception(log, found)
            self._end(attempt, Phase.FAILED, Reason.IMPORT_ERROR, message)
            return
        plan = _plan(found)
        kwargs: Mapping[str, object] = settings.kwargs
        try:
            plan.check(kwargs)
        except TypeError as exc:
            message = _clip(f"{settings.callable} does not accept the step's kwargs: {exc}")
            attempt.open_log().note(message)
            self._end(attempt, Phase.FAILED, Reason.INVALID_ARGUMENTS, message)
            return
        if plan.takes_ctx:
            # Created here, on the loop, because the function may use them from its thread.
            stop = attempt.stop_flag = threading.Event()
            kwargs = {**kwargs, "ctx": AttemptContext(spec, attempt.open_log(), stop)}
        loop = asyncio.get_running_loop()
        attempt.started_at = now = utcnow()
        if plan.is_async:
            attempt.is_async = True
            attempt.work = attempt.task = loop.create_task(
                self._run_async(attempt, found, kwargs),
                name=f"cronloop-inline-{spec.attempt_id}",
            )
        else:
            self._threads.call(loop, attempt, (_call_sync, (found, kwargs), self._sync_ended))
        if spec.timeout is not None:
            attempt.deadline_handle = loop.call_later(spec.timeout, self._on_deadline, attempt)
        attempt.post(Phase.RUNNING, Reason.STARTED, now=now)

    async def _run_async(
        self, attempt: _InlineAttempt, fn: Callable[..., Any], kwargs: Mapping[str, object]
    ) -> None:
        if attempt.stopping is not None:
            # Stopped before this first step: the function is never called (a task
            # cancelled this early would not even run this body, hence no cancel then).
            self._settle(attempt, None, None, cancelled=True)
            return
        attempt.entered = True
        result: object = None
        error: Exception | None = None
        cancelled = False
        try:
            result = await fn(**kwargs)
        except SystemExit as exc:  # would otherwise escape the task and stop the event loop
            result = _Exited(exc.code)
        except asyncio.CancelledError:
            cancelled = True
        except Exception as exc:
            error = exc
        attempt.returned = True
        self._settle(attempt, result, error, cancelled=cancelled)

    def _sync_ended(self, attempt: _InlineAttempt, outcome: _Outcome | None) -> None:
        attempt.returned = True
        if outcome is None:  # never called: the runtime was closed first
            self._settle(attempt, None, None, cancelled=True)
        else:
            self._settle(attempt, *outcome)

    def _settle(
        self,
        attempt: _InlineAttempt,
        result: object,
        error: BaseException | None,
        *,
        cancelled: bool = False,
    ) -> None:
        """The work ended: report how, unless the attempt was already reported."""
        if attempt.concluded:
            if attempt.work is not None:
                self._abandoned.discard(attempt.work)
            return
        try:
            self._conclude(attempt, result, error, cancelled=cancelled)
        except Exception as exc:
            self._internal_error(attempt, exc)

    def _conclude(
        self,
        attempt: _InlineAttempt,
        result: object,
        error: BaseException | None,
        *,
        cancelled: bool,
    ) -> None:
        if attempt.stopping is not None:
            phase, reason, message = attempt.stopping
            if error is not None:
                _log_exception(attempt.open_log(), error)
            self._end(attempt, phase, reason, message)
        elif cancelled:
            # Cancelled by someone other than this runtime (only aclose() giving up does so).
            self._end(attempt, Phase.CANCELLED, Reason.RUNTIME_SHUTDOWN, "task was cancelled")
        elif error is not None:
            _log_exception(attempt.open_log(), error)
            message = _clip(f"{type(error).__name__}: {error}")
            self._end(attempt, Phase.FAILED, Reason.EXCEPTION, message)
        elif isinstance(result, _Exited) and result.code not in (None, 0):
            code = result.code if isinstance(result.code, int) else 1
            message = _clip(f"sys.exit({result.code!r})")
            self._end(attempt, Phase.FAILED, Reason.NON_ZERO_EXIT, message, exit_code=code)
        else:
            exit_code = 0 if isinstance(result, _Exited) else None
            self._end(attempt, Phase.SUCCEEDED, Reason.COMPLETED, exit_code=exit_code)

    def _end(
        self,
        attempt: _InlineAttempt,
        phase: Phase,
        reason: str,
        message: str = "",
        *,
        exit_code: int | None = None,
    ) -> None:
        attempt.concluded = True
        # Posting the terminal report closes the log first (before_terminal).
        attempt.post(phase, reason, message, exit_code=exit_code)

    def _internal_error(self, attempt: _InlineAttempt, exc: Exception) -> None:
        # A bug here must not leave the attempt without its terminal report.
        logger.error(
            "inline runtime failed while running attempt %s",
            attempt.attempt_id,
            exc_info=exc,
        )
        if attempt.terminal_sent:
            return
        if attempt.work is not None and not attempt.returned:
            attempt.work.cancel()
            self._abandoned.add(attempt.work)
        self._end(attempt, Phase.FAILED, "InternalError", f"{type(exc).__name__}: {exc}")

    def _on_deadline(self, attempt: _InlineAttempt) -> None:
        # An async function is given the timeout's kill grace to unwind after its
        # CancelledError; a sync one cannot be stopped, so it is reported at the deadline.
        grace = attempt.spec.kill_grace if attempt.is_async else 0.0
        message = f"timeout of {attempt.spec.timeout:g} s exceeded"
        self._begin_stop(attempt, Phase.TIMED_OUT, Reason.DEADLINE_EXCEEDED, grace, message=message)

    def _begin_stop(
        self,
        attempt: _InlineAttempt,
        phase: Phase,
        reason: str,
        grace: float,
        *,
        message: str = "",
    ) -> None:
        if attempt.started_at is None or attempt.returned or attempt.concluded:
            return  # never started, or finished: nothing to stop
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + grace
        if attempt.stopping is None:
            attempt.stopping = (phase, reason, message)
            if attempt.deadline_handle is not None:
                attempt.deadline_handle.cancel()
            if attempt.stop_flag is not None:
                attempt.stop_flag.set()
            attempt.open_log().note(f"stopping ({phase.value}: {reason})")
            if attempt.entered and attempt.work is not None:
                attempt.work.cancel()
        elif attempt.give_up_at is not None and give_up_at >= attempt.give_up_at:
            return
        if attempt.give_up_handle is not None:
            attempt.give_up_handle.cancel()
        attempt.give_up_at = give_up_at
        attempt.give_up_handle = loop.call_at(give_up_at, self._give_up, attempt)

    def _give_up(self, attempt: _InlineAttempt) -> None:
        if attempt.concluded or attempt.returned:
            return
        attempt.open_log().note(
            "still running when the attempt was reported; its outcome is discarded"
        )
        if attempt.work is not None:
            self._abandoned.add(attempt.work)
        self._settle(attempt, None, None)

    def _cleanup(self, attempt: _InlineAttempt) -> None:
        attempt.before_terminal()  # (posting the terminal report does it already)


@functools.lru_cache(maxsize=1024)
def _parse(target: str) -> tuple[str, tuple[str, ...]]:
    """``"pkg.mod:Class.method"`` as ``("pkg.mod", ("Class", "method"))``."""
    module, _, attribute = target.partition(":")
    return module, tuple(attribute.split("."))


def _import(module_name: str, path: tuple[str, ...]) -> _Outcome:
    """In a worker thread: import the module and look the function up in it."""
    try:
        return _lookup(importlib.import_module(module_name), path), None
    except BaseException as exc:  # the module's code may raise anything; it is reported
        return None, exc


def _lookup(module: object, path: tuple[str, ...]) -> Callable[..., Any]:
    # Looked up on every start (it costs little): a reloaded or patched module takes effect.
    obj: Any = module
    for part in path:
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(f"{obj!r} has no attribute {part!r}") from None
    if not callable(obj):
        raise ImportError(f"{type(obj).__name__} object is not callable")
    return obj  # type: ignore[no-any-return]


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object whose __call__ is async
    )


def _call_sync(fn: Callable[..., Any], kwargs: Mapping[str, object]) -> _Outcome:
    """Call a sync function in a worker thread; its result, or what it raised."""
    try:
        result = fn(**kwargs)
        if result is not None and inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()  # never awaited on purpose; closing avoids a RuntimeWarning
            raise TypeError("a sync callable returned an awaitable; declare it 'async def'")
    except SystemExit as exc:
        return _Exited(exc.code), None
    except BaseException as exc:  # reported like the rest: it cannot stop the loop's thread
        return None, exc
    return result, None


def _log_exception(log: AttemptLog, exc: BaseException | None) -> None:
    if exc is not None:
        log.write("".join(traceback.format_exception(exc)).encode())


def _clip(message: str) -> str:
    return message if len(message) <= _MESSAGE_LIMIT else message[: _MESSAGE_LIMIT - 3] + "..."
