"""The process runtime: each attempt is a child process leading its own session (or group).

Behaviour (details and reasons in docs/runtimes.md):

- The argv is executed directly; only ``shell=True`` goes through ``/bin/sh -c``. stdin is
  ``/dev/null``. The environment is a minimal base (an allow-list copied from the runtime's
  own environment, see :func:`default_base_env`) plus the step's ``env`` plus ``CRONLOOP_*``
  variables naming the attempt. Environment values are never logged.
- The child starts a new session (``new_session=False``: only a new process group), so its
  process group holds the whole tree it spawns. A timeout or cancel sends SIGTERM to the
  group, waits the grace period, then SIGKILLs the group. When the main process exits on
  its own, whatever it left behind in its group is SIGKILLed at once (what a container
  runtime does when PID 1 exits). The group is signalled before the main process is reaped,
  so its id cannot have been reused.
- stdout and stderr share one pipe, so the log keeps the order in which the child wrote; the
  log keeps the first ``log_limit`` bytes and the pipe is drained to the end regardless. The
  log file is created at the first byte (most jobs print nothing), after a check before the
  spawn that it can be (:meth:`AttemptLog.prepare`), so an unwritable log still stops the
  attempt before it runs.
- Crash recovery kills orphans that a crashed controller left running (see :meth:`recover`).

Hand-written rather than :func:`asyncio.create_subprocess_exec` because asyncio reaps the
child as soon as it exits (freeing its group id while the group may still need a SIGKILL),
and ``Process.wait()`` also waits for every holder of the output pipe to close it. Its
transports also cost the parent several times the CPU of what is used here instead:
``os.posix_spawn``, plus one epoll set (:mod:`cronloop.runtimes._fdwatch`) that holds every
attempt's pipe and pidfd.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence

from cronloop.api.phase import Phase
from cronloop.runtimes._fdwatch import FdWatcher, fd_watcher
from cronloop.runtimes._tracking import (
    Attempt,
    TrackedRuntime,
    lost_report,
    note_recovery,
    utcnow,
)
from cronloop.runtimes.base import ReportCallback
from cronloop.runtimes.logfile import AttemptLog
from cronloop.runtimes.proctree import (
    ATTEMPT_ID_ENV,
    boot_ticks,
    find_attempt_processes,
    signal_group,
    spawned_start_time,
    stop_processes,
    watch_exit,
)
from cronloop.runtimes.report import AttemptReport, Reason, signal_name
from cronloop.runtimes.spec import AttemptSpec, ProcessSettings, RecoveryRecord

logger = logging.getLogger("cronloop.runtimes")

__all__ = ["BASE_ENV_NAMES", "ProcessRuntime", "default_base_env"]

BASE_ENV_NAMES = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
"""Variables copied from the runtime's own environment into every attempt's (when set)."""

_READ_CHUNK = 64 * 1024
_HAS_POSIX_SPAWN = hasattr(os, "posix_spawn")


def _nothing() -> None:
    pass


def default_base_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The allow-listed part of ``environ`` (default: ``os.environ``), with a PATH always set.

    Nothing else is inherited: a scheduler's own environment tends to hold credentials (its
    database URL, tokens) that must not leak into every job.
    """
    source = os.environ if environ is None else environ
    env = {name: source[name] for name in BASE_ENV_NAMES if name in source}
    env.setdefault("PATH", os.defpath)
    return env


class _ProcessAttempt(Attempt):
    """A process attempt's moving parts, all touched only from the event loop's thread."""

    def __init__(self, spec: AttemptSpec, callback: ReportCallback) -> None:
        super().__init__(spec, callback)
        self.child: _Child | None = None
        self.reaped = False
        #: The terminal report has been posted (or is being): nothing more is reported.
        self.concluded = False
        self.stopping: tuple[Phase, str] | None = None
        self.kill_at: float | None = None
        self.kill_handle: asyncio.TimerHandle | None = None
        self.deadline_handle: asyncio.TimerHandle | None = None
        self.drain_handle: asyncio.TimerHandle | None = None
        self.read_fd: int | None = None
        self.watcher: FdWatcher | None = None
        self.stop_message = ""
        self.stop_watching: Callable[[], None] = _nothing


class ProcessRuntime(TrackedRuntime[_ProcessAttempt]):
    """Runs :class:`~cronloop.runtimes.spec.ProcessSettings` steps as child processes.

    :param base_env: the environment every attempt starts from (default:
        :func:`default_base_env`); the step's ``env`` is merged onto it.
    :param drain_timeout: seconds to keep reading output after the main process exited and
        its group was killed; only a process that left the group (``setsid``) while holding
        the output open makes this wait, and the log says so when it expires.
    :param shutdown_grace: the grace period :meth:`aclose` gives running attempts.
    :param retain_finished: how many finished attempts stay available to :meth:`wait` and
        :meth:`logs`.
    :param new_session: start each attempt in a new session (default), detached from any
        controlling terminal. ``False`` starts it in a new process group of the runtime's
        session instead. Tree kills work the same, but a job that opens ``/dev/tty`` can
        reach the controller's terminal, if the controller has one. On Linux with
        ``sched_autogroup_enabled`` each new session is also its own scheduler group,
        weighted like a whole login session. With several attempts in flight on a busy
        machine, the controller then gets only a small share of the CPU. Prefer ``False``
        for a controller without a terminal (a service, a container); measurements are in
        docs/runtimes.md.
    """

    _kind = "ProcessRuntime"
    _label = "process"
    _settings_type = ProcessSettings

    def __init__(
        self,
        *,
        base_env: Mapping[str, str] | None = None,
        new_session: bool = True,
        drain_timeout: float = 2.0,
        shutdown_grace: float = 5.0,
        retain_finished: int = 1024,
    ) -> None:
        for name, value in (("drain_timeout", drain_timeout), ("shutdown_grace", shutdown_grace)):
            if not value >= 0:
                raise ValueError(f"ProcessRuntime {name} must be >= 0 seconds, got {value!r}")
        self._base_env = dict(default_base_env() if base_env is None else base_env)
        self._drain_timeout = drain_timeout
        self._new_session = new_session
        self._devnull_fd: int | None = None
        self._watcher: FdWatcher | None = None
        super().__init__(shutdown_grace=shutdown_grace, retain_finished=retain_finished)

    # -- the contract --------------------------------------------------------------------

    async def recover(
        self, records: Sequence[RecoveryRecord], *, grace: float = 5.0
    ) -> list[AttemptReport]:
        """Settle attempts a crashed controller left ``Running``; see :meth:`Runtime.recover`.

        Live processes of an attempt are found by recorded pid *and* start time, or by the
        ``CRONLOOP_ATTEMPT_ID`` in their environment (so descendants are found even when the
        leader is gone, and a reused pid never matches). They cannot be re-attached (their
        output pipe died with the old controller), so they are stopped: SIGTERM, ``grace``
        seconds, SIGKILL. Adopting them was rejected: nobody would read their output, so
        they could block on a full pipe forever, and their exit status would be unknowable.
        """
        for record in records:
            self._check_recoverable(record)
        return await asyncio.to_thread(_recover_blocking, list(records), grace)

    async def aclose(self) -> None:
        # SIGKILL cannot be ignored; the margin covers reaping and draining the pipes.
        await self._stop_running(self._shutdown_grace + self._drain_timeout + 5.0)
        if self._devnull_fd is not None:
            os.close(self._devnull_fd)
            self._devnull_fd = None
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None

    # -- one attempt ---------------------------------------------------------------------

    def _new_attempt(self, spec: AttemptSpec, callback: ReportCallback) -> _ProcessAttempt:
        return _ProcessAttempt(spec, callback)

    def _starting(self, attempt: _ProcessAttempt) -> bool:
        # Not spawned yet (start() is still in progress): stop it as soon as it is.
        return attempt.child is None and not attempt.first_done

    # No driver task: start() spawns the process and posts Running in its own step, and the
    # step that sees the process done (reaped, and its output at end of file) posts the
    # terminal report and cleans up. A task per attempt cost a task step, a future and a turn
    # of the loop at each end (see docs/runtimes.md).

    def _launch(self, attempt: _ProcessAttempt) -> None:
        try:
            failure = self._spawn(attempt)
        except Exception as exc:
            self._internal_error(attempt, exc)
            return
        if failure is not None:
            self._conclude(attempt, Phase.FAILED, *failure)
        else:
            attempt.post(Phase.RUNNING, Reason.STARTED)

    def _conclude(
        self,
        attempt: _ProcessAttempt,
        phase: Phase,
        reason: str,
        message: str = "",
        *,
        exit_code: int | None = None,
        signal: int | None = None,
        signal_name: str | None = None,
    ) -> None:
        """Post the terminal report and release what the attempt holds."""
        attempt.concluded = True
        try:
            attempt.post(
                phase, reason, message, exit_code=exit_code, signal=signal, signal_name=signal_name
            )
        finally:
            self._cleanup(attempt)

    def _internal_error(self, attempt: _ProcessAttempt, exc: Exception) -> None:
        # A bug here must not leave the attempt without its terminal report, nor its
        # processes running unwatched.
        logger.error(
            "process runtime failed while running attempt %s", attempt.attempt_id, exc_info=exc
        )
        self._kill_now(attempt)
        if attempt.terminal_sent:
            self._cleanup(attempt)
        else:
            self._conclude(attempt, Phase.FAILED, "InternalError", f"{type(exc).__name__}: {exc}")

    def _spawn(self, attempt: _ProcessAttempt) -> tuple[str, str] | None:
        """Spawn the attempt's process and watch it; or return why it cannot start (the
        reason and message of its Failed report)."""
        spec = attempt.spec
        settings = spec.settings
        assert isinstance(settings, ProcessSettings)
        try:
            attempt.log = AttemptLog.prepare(spec.log_path, spec.log_limit)
        except OSError as exc:
            return (
                Reason.LOG_UNAVAILABLE,
                f"cannot create log file {str(spec.log_path)!r}: {exc.strerror}",
            )
        argv = settings.argv
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        ticks_before = boot_ticks()
        try:
            attempt.child = _spawn(
                argv,
                settings,
                self._env_for(spec, settings),
                write_fd,
                self._devnull(),
                new_session=self._new_session,
            )
        except OSError as exc:
            os.close(read_fd)
            where = (
                f" (working directory {str(settings.cwd)!r})"
                if settings.cwd is not None and exc.filename == settings.cwd
                else ""
            )
            message = f"cannot start {argv[0]!r}: {exc.strerror}{where}"
            attempt.log.note(message)
            return Reason.SPAWN_FAILED, message
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        ticks_after = boot_ticks()
        pid = attempt.child.pid
        attempt.started_at = utcnow()
        attempt.pid = attempt.pgid = pid
        attempt.process_start_time = spawned_start_time(pid, ticks_before, ticks_after)
        attempt.read_fd = read_fd
        os.set_blocking(read_fd, False)
        watcher = attempt.watcher = self._fd_watcher()
        watcher.add(read_fd, functools.partial(self._on_output, attempt))
        attempt.stop_watching = watch_exit(
            pid, functools.partial(self._on_exit, attempt), watcher=watcher
        )
        if spec.timeout is not None:
            attempt.deadline_handle = watcher.loop.call_later(
                spec.timeout, self._on_deadline, attempt
            )
        return None

    def _fd_watcher(self) -> FdWatcher:
        # One epoll set per runtime, on the loop it runs on (a new one if that loop changed).
        loop = asyncio.get_running_loop()
        if self._watcher is None or self._watcher.loop is not loop:
            if self._watcher is not None and self._watcher.loop.is_closed():
                self._watcher.close()
            self._watcher = fd_watcher(loop)
        return self._watcher

    def _devnull(self) -> int:
        # One read-only /dev/null for every child's stdin, opened once instead of per spawn.
        if self._devnull_fd is None:
            self._devnull_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        return self._devnull_fd

    def _env_for(self, spec: AttemptSpec, settings: ProcessSettings) -> dict[str, str]:
        env = {**self._base_env, **settings.env}
        env[ATTEMPT_ID_ENV] = spec.attempt_id
        env["CRONLOOP_JOB"] = spec.job
        env["CRONLOOP_SUBJOB"] = spec.subjob
        env["CRONLOOP_TARGET"] = spec.target
        env["CRONLOOP_STEP"] = spec.step
        env["CRONLOOP_ATTEMPT"] = str(spec.attempt)
        if spec.shard_index is not None:
            env["CRONLOOP_SHARD_INDEX"] = str(spec.shard_index)
        return env

    def _on_output(self, attempt: _ProcessAttempt) -> None:
        self._read_output(attempt)

    def _read_output(self, attempt: _ProcessAttempt) -> bool:
        """Read what the pipe holds; False if nothing was there yet."""
        assert attempt.read_fd is not None
        assert attempt.log is not None
        try:
            data = os.read(attempt.read_fd, _READ_CHUNK)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if data:
            attempt.log.write(data)
        else:
            self._close_output(attempt)
        return True

    def _close_output(self, attempt: _ProcessAttempt) -> None:
        if attempt.read_fd is not None:
            assert attempt.watcher is not None
            attempt.watcher.remove(attempt.read_fd)
            os.close(attempt.read_fd)
            attempt.read_fd = None
        if attempt.reaped:
            self._set_process_done(attempt)

    def _on_exit(self, attempt: _ProcessAttempt) -> None:
        # The main process is a zombie now: its pid (= the group id) cannot be reused until it
        # is reaped below, so the group signal reaches only what the attempt left behind.
        for handle in (attempt.deadline_handle, attempt.kill_handle):
            if handle is not None:
                handle.cancel()
        if attempt.pgid is not None:
            signal_group(attempt.pgid, signal.SIGKILL)
        assert attempt.child is not None
        attempt.child.reap()
        attempt.reaped = True
        if attempt.read_fd is None:
            self._set_process_done(attempt)  # the end of file came first
            return
        # A process's descriptors are closed before its exit is signalled, so the rest of
        # its output and the end of file are usually readable already: read them here
        # rather than on the next events (the drain timer and a dispatch cost more). A full
        # pipe holds one read; a few more, at most, in case a leftover process still writes.
        for _ in range(4):
            if not self._read_output(attempt) or attempt.read_fd is None:
                break  # nothing more to read yet, or the end of file (the attempt is done)
        if attempt.read_fd is not None:
            # Still open: either its end of file is on its way (it usually follows the exit
            # within microseconds), or a process that left the group holds the pipe. Keep
            # reading, and stop after drain_timeout.
            attempt.drain_handle = asyncio.get_running_loop().call_later(
                self._drain_timeout, self._drain_expired, attempt
            )

    def _drain_expired(self, attempt: _ProcessAttempt) -> None:
        assert attempt.log is not None
        attempt.log.note(
            f"output still open {self._drain_timeout:g} s after the process exited "
            f"(held by a process outside its group); stopped reading"
        )
        self._close_output(attempt)

    def _set_process_done(self, attempt: _ProcessAttempt) -> None:
        """The main process was reaped and the output pipe closed (at its end of file, or
        ``drain_timeout`` after the exit): report the end."""
        if attempt.drain_handle is not None:
            attempt.drain_handle.cancel()
        if attempt.concluded:
            return
        try:
            self._finish(attempt)
        except Exception as exc:
            self._internal_error(attempt, exc)

    def _on_deadline(self, attempt: _ProcessAttempt) -> None:
        self._begin_stop(
            attempt,
            Phase.TIMED_OUT,
            Reason.DEADLINE_EXCEEDED,
            attempt.spec.kill_grace,
            message=f"timeout of {attempt.spec.timeout:g} s exceeded",
        )

    def _begin_stop(
        self,
        attempt: _ProcessAttempt,
        phase: Phase,
        reason: str,
        grace: float,
        *,
        message: str = "",
    ) -> None:
        if attempt.reaped or attempt.child is None or attempt.pgid is None:
            return  # already ended (or never started): nothing to stop
        loop = asyncio.get_running_loop()
        kill_at = loop.time() + grace
        if attempt.stopping is None:
            attempt.stopping = (phase, reason)
            attempt.stop_message = message
            if attempt.deadline_handle is not None:
                attempt.deadline_handle.cancel()
            if attempt.log is not None:
                attempt.log.note(
                    f"stopping ({phase.value}: {reason}); SIGTERM now, SIGKILL after {grace:g} s"
                )
            signal_group(attempt.pgid, signal.SIGTERM)
        elif attempt.kill_at is not None and kill_at >= attempt.kill_at:
            return  # the forced stop is already due sooner
        if attempt.kill_handle is not None:
            attempt.kill_handle.cancel()
        attempt.kill_at = kill_at
        attempt.kill_handle = loop.call_at(kill_at, self._kill_now, attempt)

    def _kill_now(self, attempt: _ProcessAttempt) -> None:
        if not attempt.reaped and attempt.pgid is not None and attempt.child is not None:
            signal_group(attempt.pgid, signal.SIGKILL)

    def _finish(self, attempt: _ProcessAttempt) -> None:
        assert attempt.child is not None
        assert attempt.log is not None
        code = attempt.child.returncode
        assert code is not None
        exit_code = code if code >= 0 else None
        signum = -code if code < 0 else None
        name = signal_name(signum) if signum is not None else None
        phase: Phase
        reason: str
        if attempt.stopping is not None:
            phase, reason = attempt.stopping
            message = attempt.stop_message
        elif attempt.child.status_lost:
            exit_code = None
            phase, reason = Phase.FAILED, Reason.EXIT_STATUS_LOST
            message = "the exit status was collected by another waitpid() in this process"
        elif code == 0:
            phase, reason, message = Phase.SUCCEEDED, Reason.COMPLETED, ""
        elif signum is None:
            phase, reason, message = Phase.FAILED, Reason.NON_ZERO_EXIT, f"exited with code {code}"
        else:
            phase, reason, message = Phase.FAILED, Reason.SIGNALED, f"killed by {name}"
        attempt.log.close()
        if attempt.log.error is not None:
            # The check before the spawn passed, but the file could not be created later.
            lost = (
                f"output dropped: cannot create log file {str(attempt.log.path)!r}: "
                f"{attempt.log.error.strerror}"
            )
            message = f"{message}; {lost}" if message else lost
        self._conclude(
            attempt, phase, reason, message, exit_code=exit_code, signal=signum, signal_name=name
        )

    def _abandon(self, attempt: _ProcessAttempt) -> None:
        self._cleanup(attempt)

    def _cleanup(self, attempt: _ProcessAttempt) -> None:
        for handle in (attempt.deadline_handle, attempt.kill_handle, attempt.drain_handle):
            if handle is not None:
                handle.cancel()
        attempt.stop_watching()
        self._close_output(attempt)
        if attempt.child is not None and not attempt.reaped:
            # Only reached after an internal error or an abandoned kill: reap if possible.
            attempt.reaped = attempt.child.reap() is not None
        if attempt.log is not None:
            attempt.log.close()


class _Child:
    """The main process of an attempt: its pid and, once reaped, its return code."""

    def __init__(self, pid: int, popen: subprocess.Popen[bytes] | None = None) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.status_lost = False
        self._popen = popen

    def reap(self) -> int | None:
        """Collect the exit status if the process has exited (never blocks)."""
        if self.returncode is not None:
            return self.returncode
        if self._popen is not None:
            self.returncode = self._popen.poll()
            return self.returncode
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere (a waitpid(-1) in the application)
            self.status_lost = True
            self.returncode = 255
            return self.returncode
        if pid == 0:
            return None
        self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def _spawn(
    argv: Sequence[str],
    settings: ProcessSettings,
    env: dict[str, str],
    output_fd: int,
    devnull_fd: int,
    *,
    new_session: bool,
) -> _Child:
    """Start the main process with stdin on /dev/null and stdout+stderr on ``output_fd``.

    ``os.posix_spawn`` is used when no working directory is set, because it costs the parent
    less CPU than ``subprocess.Popen`` (see bench/runtime_process.py). It does not close other
    inheritable descriptors, but Python creates every descriptor non-inheritable (PEP 446).
    ``Popen`` is used when there is a ``cwd``, because Python's ``posix_spawn`` cannot change
    directory. Both return as soon as the child has exec'd (vfork), so this may run on the
    loop, as asyncio's own subprocess transport does.
    """
    if settings.cwd is None and _HAS_POSIX_SPAWN:
        executable = argv[0]
        if "/" not in executable:
            found = shutil.which(executable, path=env.get("PATH", os.defpath))
            if found is None:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), executable)
            executable = found
        args = list(argv)
        file_actions = [
            (os.POSIX_SPAWN_DUP2, devnull_fd, 0),
            (os.POSIX_SPAWN_DUP2, output_fd, 1),
            (os.POSIX_SPAWN_DUP2, output_fd, 2),
        ]
        if new_session:
            pid = os.posix_spawn(executable, args, env, file_actions=file_actions, setsid=True)
        else:
            pid = os.posix_spawn(executable, args, env, file_actions=file_actions, setpgroup=0)
        return _Child(pid)
    popen = subprocess.Popen(
        argv,
        stdin=devnull_fd,
        stdout=output_fd,
        stderr=output_fd,
        cwd=settings.cwd,
        env=env,
        start_new_session=new_session,
        process_group=None if new_session else 0,
        close_fds=True,
    )
    return _Child(popen.pid, popen)


def _recover_blocking(records: list[RecoveryRecord], grace: float) -> list[AttemptReport]:
    found = find_attempt_processes({r.attempt_id: (r.pid, r.process_start_time) for r in records})
    reports: list[AttemptReport] = []
    for record in records:
        processes = found[record.attempt_id]
        if not processes:
            reason, message = Reason.PROCESS_GONE, "the attempt's process no longer exists"
        elif stop_processes(processes, grace=grace, kill_wait=5.0):
            pids = ", ".join(str(p.pid) for p in processes)
            reason = Reason.ORPHAN_KILLED
            message = f"still running after a controller restart; killed pid(s) {pids}"
        else:
            pids = ", ".join(str(p.pid) for p in processes)
            reason = Reason.ORPHAN_UNKILLABLE
            message = f"still running after a controller restart; pid(s) {pids} survived SIGKILL"
        note_recovery(record, f"recovered after a controller restart: {message}")
        reports.append(
            lost_report(
                record,
                reason,
                message,
                pid=record.pid,
                process_start_time=record.process_start_time,
            )
        )
    return reports
