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
import concurrent.futures
import functools
import importlib
import inspect
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
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


class _InlineAttempt(Attempt):
    def __init__(self, spec: AttemptSpec, callback: ReportCallback) -> None:
        super().__init__(spec, callback)
        loop = asyncio.get_running_loop()
        self.stop_flag = threading.Event()
        self.stopping: tuple[Phase, str, str] | None = None
        self.give_up: asyncio.Future[None] = loop.create_future()
        self.give_up_at: float | None = None
        self.give_up_handle: asyncio.TimerHandle | None = None
        self.deadline_handle: asyncio.TimerHandle | None = None
        self.work: asyncio.Future[Any] | None = None
        self.is_async = False


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
        self._abandoned: set[asyncio.Future[Any]] = set()
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
        # Each driver reports by its give-up time at the latest; the margin is for delivery.
        await self._stop_running(self._shutdown_grace + 5.0)
        abandoned = list(self._abandoned)
        for work in abandoned:
            work.cancel()  # a second chance for tasks that swallowed the first cancel
        if abandoned:
            await asyncio.wait(abandoned, timeout=1.0)
        # Threads cannot be interrupted: do not wait for abandoned sync functions here.
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- one attempt ---------------------------------------------------------------------

    def _new_attempt(self, spec: AttemptSpec, callback: ReportCallback) -> _InlineAttempt:
        return _InlineAttempt(spec, callback)

    def _cleanup(self, attempt: _InlineAttempt) -> None:
        for handle in (attempt.deadline_handle, attempt.give_up_handle):
            if handle is not None:
                handle.cancel()
        if attempt.log is not None:
            attempt.log.close()

    async def _run(self, attempt: _InlineAttempt) -> None:
        spec = attempt.spec
        settings = spec.settings
        assert isinstance(settings, InlineSettings)
        try:
            log = attempt.log = AttemptLog.create(spec.log_path, spec.log_limit, lazy=True)
        except OSError as exc:
            await attempt.report(
                Phase.FAILED,
                Reason.LOG_UNAVAILABLE,
                f"cannot create log file {str(spec.log_path)!r}: {exc.strerror}",
            )
            return
        loop = asyncio.get_running_loop()
        try:
            if settings.module in sys.modules:
                fn = _resolve(settings)
            else:  # importing runs module code: keep it off the event loop
                fn = await loop.run_in_executor(self._pool, _resolve, settings)
        except Exception as exc:
            message = _clip(f"cannot import {settings.callable!r}: {type(exc).__name__}: {exc}")
            log.note(message)
            log.write("".join(traceback.format_exception(exc)).encode())
            await attempt.report(Phase.FAILED, Reason.IMPORT_ERROR, message)
            return
        try:
            call = _bind(fn, settings, AttemptContext(spec, log, attempt.stop_flag))
        except TypeError as exc:
            message = _clip(f"{settings.callable} does not accept the step's kwargs: {exc}")
            log.note(message)
            await attempt.report(Phase.FAILED, Reason.INVALID_ARGUMENTS, message)
            return
        attempt.is_async = _is_async(fn)
        attempt.started_at = utcnow()
        if attempt.is_async:
            attempt.work = loop.create_task(_call_async(call))
        else:
            attempt.work = loop.run_in_executor(self._pool, _call_sync, call)
        if spec.timeout is not None:
            attempt.deadline_handle = loop.call_later(spec.timeout, self._on_deadline, attempt)
        await attempt.report(Phase.RUNNING, Reason.STARTED)
        await asyncio.wait({attempt.work, attempt.give_up}, return_when=asyncio.FIRST_COMPLETED)
        await self._finish(attempt, attempt.work, log)

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
        work = attempt.work
        if work is None or work.done() or attempt.ended:
            return  # never started, or finished: nothing to stop
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + grace
        if attempt.stopping is None:
            attempt.stopping = (phase, reason, message)
            if attempt.deadline_handle is not None:
                attempt.deadline_handle.cancel()
            attempt.stop_flag.set()
            if attempt.log is not None:
                attempt.log.note(f"stopping ({phase.value}: {reason})")
            if attempt.is_async:
                work.cancel()
        elif attempt.give_up_at is not None and give_up_at >= attempt.give_up_at:
            return
        if attempt.give_up_handle is not None:
            attempt.give_up_handle.cancel()
        attempt.give_up_at = give_up_at
        attempt.give_up_handle = loop.call_at(give_up_at, _resolve_future, attempt.give_up)

    async def _finish(
        self, attempt: _InlineAttempt, work: asyncio.Future[Any], log: AttemptLog
    ) -> None:
        if not work.done():
            log.note("still running when the attempt was reported; its outcome is discarded")
            self._abandon(work)
        if attempt.stopping is not None:
            phase, reason, message = attempt.stopping
            if work.done() and not work.cancelled() and work.exception() is not None:
                _log_exception(log, work.exception())
            await attempt.report(phase, reason, message)
            return
        if work.cancelled():
            # Cancelled by someone other than this runtime (only aclose() giving up does so).
            await attempt.report(Phase.CANCELLED, Reason.RUNTIME_SHUTDOWN, "task was cancelled")
            return
        exc = work.exception()
        if exc is not None:
            _log_exception(log, exc)
            await attempt.report(
                Phase.FAILED, Reason.EXCEPTION, _clip(f"{type(exc).__name__}: {exc}")
            )
            return
        result = work.result()
        if isinstance(result, _Exited) and result.code not in (None, 0):
            code = result.code if isinstance(result.code, int) else 1
            message = f"sys.exit({result.code!r})"
            await attempt.report(Phase.FAILED, Reason.NON_ZERO_EXIT, _clip(message), exit_code=code)
            return
        exit_code = 0 if isinstance(result, _Exited) else None
        await attempt.report(Phase.SUCCEEDED, Reason.COMPLETED, exit_code=exit_code)

    def _abandon(self, work: asyncio.Future[Any]) -> None:
        self._abandoned.add(work)

        def forget(done: asyncio.Future[Any]) -> None:
            self._abandoned.discard(done)
            if not done.cancelled():
                done.exception()  # retrieved, so asyncio does not warn about it

        work.add_done_callback(forget)


def _resolve_future(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _resolve(settings: InlineSettings) -> Callable[..., Any]:
    obj: Any = importlib.import_module(settings.module)
    for part in settings.attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(f"{obj!r} has no attribute {part!r}") from None
    if not callable(obj):
        raise ImportError(f"{type(obj).__name__} object is not callable")
    return obj  # type: ignore[no-any-return]


@functools.lru_cache(maxsize=1024)
def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    """The signature of ``fn`` (working it out costs more than the rest of a start), or None
    for callables that have none."""
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def _bind(
    fn: Callable[..., Any], settings: InlineSettings, ctx: AttemptContext
) -> Callable[[], Any]:
    kwargs: dict[str, Any] = dict(settings.kwargs)
    try:
        signature = _signature(fn)
    except TypeError:  # unhashable: not cached
        signature = _signature.__wrapped__(fn)
    if signature is None:  # some builtins have no signature: call and see
        return functools.partial(fn, **kwargs)
    ctx_param = signature.parameters.get("ctx")
    if ctx_param is not None and ctx_param.kind is not inspect.Parameter.POSITIONAL_ONLY:
        kwargs["ctx"] = ctx
    signature.bind(**kwargs)
    return functools.partial(fn, **kwargs)


@functools.lru_cache(maxsize=1024)
def _is_async_cached(fn: Callable[..., Any]) -> bool:
    return _is_async_uncached(fn)


def _is_async(fn: Callable[..., Any]) -> bool:
    try:
        return _is_async_cached(fn)
    except TypeError:  # unhashable: not cached
        return _is_async_uncached(fn)


def _is_async_uncached(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object whose __call__ is async
    )


async def _call_async(call: Callable[[], Any]) -> Any:
    try:
        return await call()
    except SystemExit as exc:  # would otherwise escape the task and stop the event loop
        return _Exited(exc.code)


def _call_sync(call: Callable[[], Any]) -> Any:
    try:
        result = call()
    except SystemExit as exc:
        return _Exited(exc.code)
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()  # never awaited on purpose; closing avoids a RuntimeWarning
        raise TypeError("a sync callable returned an awaitable; declare it 'async def'")
    return result


def _log_exception(log: AttemptLog, exc: BaseException | None) -> None:
    if exc is not None:
        log.write("".join(traceback.format_exception(exc)).encode())


def _clip(message: str) -> str:
    return message if len(message) <= _MESSAGE_LIMIT else message[: _MESSAGE_LIMIT - 3] + "..."
