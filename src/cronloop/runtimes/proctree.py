"""Process-tree plumbing for the process runtime: exit watching, start times, group signals,
orphans.

- :func:`watch_exit` calls back on the event loop when a child exits *without reaping it*: a
  zombie still holds its pid and therefore its process-group id, so the runtime can signal the
  group knowing the id cannot have been reused by an unrelated process. It uses a pidfd where
  the kernel has one (Linux >= 5.3, no thread; in the runtime's epoll set when it is given an
  :class:`~cronloop.runtimes._fdwatch.FdWatcher`) and a waiting thread elsewhere.
- :func:`spawned_start_time` gives a child's start time for crash recovery, usually without
  reading ``/proc`` (see its docstring); :func:`process_start_time` reads it for any pid.
- :func:`find_attempt_processes` and :func:`stop_processes` implement crash recovery: a
  process belongs to an attempt if it is the recorded leader (same pid *and* same start time,
  so a reused pid never matches) or if its environment carries the attempt's
  ``CRONLOOP_ATTEMPT_ID`` (inherited by every descendant that did not scrub its environment).

Hand-written because asyncio's child watchers reap the child as soon as it exits (the group
id is then free for reuse), psutil's waits treat unreaped zombies as alive, and psutil reads
``/proc/<pid>/stat`` through several layers for a start time the runtime needs per spawn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence

import psutil

from cronloop.runtimes._fdwatch import FdWatcher, LoopWatcher

__all__ = [
    "ATTEMPT_ID_ENV",
    "START_TIME_TOLERANCE",
    "boot_ticks",
    "find_attempt_processes",
    "is_gone",
    "process_start_time",
    "same_start_time",
    "signal_group",
    "spawned_start_time",
    "stop_processes",
    "watch_exit",
]

logger = logging.getLogger("cronloop.runtimes")

ATTEMPT_ID_ENV = "CRONLOOP_ATTEMPT_ID"
"""Set in every attempt process's environment; the identity recovery looks for."""

START_TIME_TOLERANCE = 0.005
"""Seconds two start times may differ and still name the same process.

Linux counts start times in clock ticks (10 ms), so two different processes never compare
equal under half a tick, while float rounding of the same process's time stays far below it.
"""

_HAS_PIDFD = hasattr(os, "pidfd_open")
_LINUX = sys.platform.startswith("linux")
_HAS_BOOT_CLOCK = _LINUX and hasattr(time, "CLOCK_BOOTTIME")

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_NS_PER_TICK = 1_000_000_000 // _CLOCK_TICKS
_boot_time: float | None = None
# Whether boot_ticks() brackets give the start time /proc shows: None until checked once
# against /proc in this process, then True or False for good (see spawned_start_time).
_brackets_agree: bool | None = None


def _stat_start_ticks(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat`` (start time in clock ticks since boot), None if gone."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    # Fields after the parenthesised command name (which may hold spaces and parentheses).
    return int(data[data.rindex(b")") + 2 :].split()[19])


def _ticks_to_epoch(ticks: int) -> float:
    global _boot_time
    if _boot_time is None:
        _boot_time = psutil.boot_time()
    return float(ticks) / _CLOCK_TICKS + _boot_time


def process_start_time(pid: int) -> float | None:
    """The start time of ``pid`` (seconds since the epoch), or None if there is no such process.

    Equal to :meth:`psutil.Process.create_time`. On Linux it is computed the same way but
    from one read of ``/proc/<pid>/stat`` and a boot time read once per process, because
    psutil's generic path costs several times more.
    """
    if _LINUX:
        ticks = _stat_start_ticks(pid)
        return None if ticks is None else _ticks_to_epoch(ticks)
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def boot_ticks() -> int | None:
    """Clock ticks since boot now, on the clock ``/proc/<pid>/stat`` uses for start times.

    None where that clock is not known (not Linux). Pass the readings taken just before and
    just after a spawn to :func:`spawned_start_time`.
    """
    if not _HAS_BOOT_CLOCK:
        return None
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) // _NS_PER_TICK


def spawned_start_time(pid: int, ticks_before: int | None, ticks_after: int | None) -> float | None:
    """The start time of child ``pid``, spawned between two :func:`boot_ticks` readings.

    Equal to :func:`process_start_time`, usually without reading ``/proc``. Linux stamps a new
    process with the boot clock at its fork, and ``/proc/<pid>/stat`` shows that stamp in
    whole clock ticks, rounded down. When both readings fall in the same tick, that tick is
    therefore the child's start time. A spawn takes well under a tick (10 ms), so this holds
    for almost every spawn. Reading ``/proc`` right after the spawn costs the parent about
    40 µs of CPU, because it races the child's exec, and sometimes it waits much longer.

    ``/proc`` is still read when the readings fall in different ticks, and until the first
    prediction in this process has been checked against ``/proc`` and found equal. A kernel
    that stamped processes differently would fail that check, and then ``/proc`` is always
    read.
    """
    global _brackets_agree
    exact = ticks_before is not None and ticks_before == ticks_after
    if exact and _brackets_agree:
        assert ticks_before is not None
        return _ticks_to_epoch(ticks_before)
    if not _LINUX:
        return process_start_time(pid)
    ticks = _stat_start_ticks(pid)
    if ticks is None:
        return None
    if exact and _brackets_agree is None:
        _brackets_agree = ticks == ticks_before
        if not _brackets_agree:
            logger.info("process start times do not follow the boot clock; reading /proc instead")
    return _ticks_to_epoch(ticks)


def same_start_time(a: float, b: float) -> bool:
    """Whether two recorded start times name the same process (see START_TIME_TOLERANCE)."""
    return abs(a - b) < START_TIME_TOLERANCE


def signal_group(pgid: int, signum: int) -> None:
    """Send ``signum`` to process group ``pgid``; an empty group is not an error."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass
    except PermissionError:
        # A member changed its uid (a setuid program); the rest of the group was signalled.
        logger.warning("no permission to signal every process in group %d", pgid)


def watch_exit(
    pid: int, callback: Callable[[], None], *, watcher: FdWatcher | None = None
) -> Callable[[], None]:
    """Call ``callback`` on the running loop once child ``pid`` has exited, leaving it unreaped.

    Returns a function that stops watching. The caller reaps the child (``waitpid``) after the
    callback, once it no longer needs the group id. The pidfd goes to ``watcher`` when given
    (it must belong to the running loop), otherwise to ``loop.add_reader``. Without pidfds
    (not Linux, a kernel before 5.3, or a seccomp filter refusing the call) a thread waits.
    """
    loop = asyncio.get_running_loop()
    if _HAS_PIDFD:
        try:
            fd = os.pidfd_open(pid)
        except OSError:  # ENOSYS on old kernels, or seccomp-filtered
            pass
        else:
            return _watch_pidfd(watcher or LoopWatcher(loop), fd, callback)
    return _watch_thread(loop, pid, callback)


def _watch_pidfd(watcher: FdWatcher, fd: int, callback: Callable[[], None]) -> Callable[[], None]:
    closed = False

    def stop() -> None:
        nonlocal closed
        if not closed:
            closed = True
            watcher.remove(fd)
            os.close(fd)

    def on_readable() -> None:
        stop()
        callback()

    watcher.add(fd, on_readable)
    return stop


def _watch_thread(
    loop: asyncio.AbstractEventLoop, pid: int, callback: Callable[[], None]
) -> Callable[[], None]:
    stopped = threading.Event()

    def deliver() -> None:
        if not stopped.is_set():
            stopped.set()
            callback()

    def wait() -> None:
        with contextlib.suppress(ChildProcessError):
            # WNOWAIT observes the exit and leaves the zombie in place (see module docstring).
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
            loop.call_soon_threadsafe(deliver)

    threading.Thread(target=wait, name=f"cronloop-wait-{pid}", daemon=True).start()
    return stopped.set


def is_gone(process: psutil.Process) -> bool:
    """True if the process no longer exists, is a zombie, or its pid now names another one."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False


def find_attempt_processes(
    leaders: dict[str, tuple[int | None, float | None]],
) -> dict[str, list[psutil.Process]]:
    """The live processes of each attempt (blocking: reads the process table).

    ``leaders`` maps an attempt id to its recorded ``(pid, start time)``. A recorded pid only
    counts if the start time is known and matches; any process whose environment has the
    attempt's ``CRONLOOP_ATTEMPT_ID`` counts too. The recorded leader comes first.
    """
    found: dict[str, list[psutil.Process]] = {attempt_id: [] for attempt_id in leaders}
    seen: set[int] = set()
    for attempt_id, (pid, start_time) in leaders.items():
        if pid is None or start_time is None:
            continue
        try:
            process = psutil.Process(pid)
        except psutil.Error:
            continue
        if same_start_time(process.create_time(), start_time) and not is_gone(process):
            found[attempt_id].append(process)
            seen.add(pid)
    me = os.getpid()
    for process in psutil.process_iter():
        if process.pid == me or process.pid in seen:
            continue
        try:
            marker = process.environ().get(ATTEMPT_ID_ENV)
        except psutil.Error:  # other users' processes, kernel threads, or already gone
            continue
        if marker is not None and marker in found and not is_gone(process):
            found[marker].append(process)
            seen.add(process.pid)
    return found


def stop_processes(processes: Sequence[psutil.Process], *, grace: float, kill_wait: float) -> bool:
    """SIGTERM the processes (and the group of the first, a verified leader), wait up to
    ``grace`` seconds, then SIGKILL what is left and wait up to ``kill_wait``.

    Blocking. Returns True when every process is gone. Each signal is sent through psutil,
    which re-checks the start time first, so a pid reused meanwhile is never signalled.
    """
    for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, kill_wait)):
        alive = [p for p in processes if not is_gone(p)]
        if not alive:
            return True
        _signal_all(alive, signum)
        if _wait_gone(alive, wait):
            return True
    return all(is_gone(p) for p in processes)


def _signal_all(processes: Iterable[psutil.Process], signum: int) -> None:
    for index, process in enumerate(processes):
        try:
            if index == 0 and not is_gone(process):
                # A live leader pins its group id, so the group cannot be someone else's.
                with contextlib.suppress(psutil.Error):
                    if process.pid == os.getpgid(process.pid):
                        signal_group(process.pid, signum)
            process.send_signal(signum)
        except (psutil.NoSuchProcess, ProcessLookupError):
            continue
        except psutil.AccessDenied:
            logger.warning("no permission to signal orphan process %d", process.pid)


def _wait_gone(processes: Sequence[psutil.Process], timeout: float) -> bool:
    # These are not our children (their parent was the crashed controller), so there is no
    # exit event to wait on portably; poll with a short, growing interval instead.
    deadline = time.monotonic() + timeout
    interval = 0.005
    while True:
        if all(is_gone(p) for p in processes):
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(interval, remaining))
        interval = min(interval * 2, 0.1)
