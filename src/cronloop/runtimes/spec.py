"""What a runtime is asked to run: :class:`AttemptSpec` and each runtime's step settings.

These are deliberately small frozen dataclasses owned by the runtimes layer rather than the
API's resource types: a runtime (including the future remote agent, which receives them over
the wire) needs only what is here, and the controller translates a SubJob's step into an
:class:`AttemptSpec` when it starts an attempt. Every field is validated on construction and a
bad value raises :class:`ValueError` naming the field.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import cast

__all__ = [
    "DEFAULT_KILL_GRACE",
    "DEFAULT_LOG_LIMIT",
    "RESERVED_ENV_PREFIX",
    "AttemptSpec",
    "InlineSettings",
    "ProcessSettings",
    "RecoveryRecord",
    "StepSettings",
]

DEFAULT_LOG_LIMIT = 10 * 1024 * 1024
"""Bytes of output kept per attempt unless the spec says otherwise (10 MiB)."""

DEFAULT_KILL_GRACE = 10.0
"""Seconds between SIGTERM and SIGKILL when an attempt times out (Kubernetes uses 30)."""

RESERVED_ENV_PREFIX = "CRONLOOP_"
"""Environment names the process runtime sets itself; a step's ``env`` may not use them."""

_IDENTIFIER_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_ENV_NAME = re.compile(r"^[^=\x00]+$")


def _frozen_mapping(value: Mapping[str, object]) -> Mapping[str, object]:
    return MappingProxyType(dict(value))


@dataclass(frozen=True)
class InlineSettings:
    """How the inline runtime runs a step: a Python callable in the controller's process.

    ``callable`` is ``"package.module:function"`` (the part after the colon may be a dotted
    attribute path, e.g. ``"pkg.mod:Class.method"``). ``kwargs`` are passed as keyword
    arguments; ``ctx`` is reserved for the :class:`~cronloop.runtimes.inline.AttemptContext`
    the runtime passes when the function declares a ``ctx`` parameter.
    """

    callable: str
    kwargs: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        module, sep, attr = self.callable.partition(":")
        if not sep or not _IDENTIFIER_PATH.match(module) or not _IDENTIFIER_PATH.match(attr):
            raise ValueError(
                f"InlineSettings.callable must look like 'package.module:function', "
                f"got {self.callable!r}"
            )
        for key in self.kwargs:
            if not isinstance(key, str) or not key.isidentifier():
                raise ValueError(f"InlineSettings.kwargs: {key!r} is not a valid argument name")
        if "ctx" in self.kwargs:
            raise ValueError("InlineSettings.kwargs may not contain 'ctx': the runtime passes it")
        object.__setattr__(self, "kwargs", _frozen_mapping(self.kwargs))

    @property
    def module(self) -> str:
        """The module part of :attr:`callable`."""
        return self.callable.partition(":")[0]

    @property
    def attribute(self) -> str:
        """The attribute path after the colon."""
        return self.callable.partition(":")[2]


@dataclass(frozen=True)
class ProcessSettings:
    """How the process runtime runs a step: a child process in its own session.

    ``command`` is an argv sequence executed directly (no shell, so metacharacters are literal
    arguments). A string without ``shell`` is split like a shell would split words
    (:func:`shlex.split`: quotes are honoured, nothing is expanded). With ``shell=True`` the
    string runs as ``/bin/sh -c command``. ``env`` is merged onto the runtime's minimal base
    environment (see docs/runtimes.md); names starting with ``CRONLOOP_`` are reserved.
    ``cwd`` is the working directory (default: the runtime's own).
    """

    command: Sequence[str] | str
    shell: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | Path | None = None

    def __post_init__(self) -> None:
        if self.shell:
            if not isinstance(self.command, str) or not self.command.strip():
                raise ValueError(
                    "ProcessSettings.command must be a non-empty string when shell is true"
                )
        else:
            argv = shlex.split(self.command) if isinstance(self.command, str) else self.command
            argv = tuple(argv)
            if not argv or not all(isinstance(arg, str) for arg in argv):
                raise ValueError(
                    f"ProcessSettings.command must be a non-empty list of strings, "
                    f"got {self.command!r}"
                )
            if any("\x00" in arg for arg in argv):
                raise ValueError("ProcessSettings.command may not contain NUL characters")
            object.__setattr__(self, "command", argv)
        for name, value in self.env.items():
            if not isinstance(name, str) or not _ENV_NAME.match(name):
                raise ValueError(f"ProcessSettings.env: {name!r} is not a valid variable name")
            if name.startswith(RESERVED_ENV_PREFIX):
                raise ValueError(
                    f"ProcessSettings.env: {name!r} is reserved (the runtime sets "
                    f"{RESERVED_ENV_PREFIX}* variables itself)"
                )
            # The value itself is never echoed: environment values may be secrets.
            if not isinstance(value, str) or "\x00" in value:
                raise ValueError(f"ProcessSettings.env[{name!r}] must be a string without NUL")
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))

    @property
    def argv(self) -> tuple[str, ...]:
        """The argv the runtime executes (``/bin/sh -c command`` when ``shell`` is true)."""
        if self.shell:
            assert isinstance(self.command, str)
            return ("/bin/sh", "-c", self.command)
        assert isinstance(self.command, tuple)
        return self.command


StepSettings = InlineSettings | ProcessSettings
"""The runtime-specific part of a step."""


def _positive_or_none(owner: str, name: str, value: float | None) -> None:
    if value is not None and (not math.isfinite(value) or value <= 0):
        raise ValueError(
            f"{owner}.{name} must be a positive number of seconds or None, got {value!r}"
        )


def _non_empty(owner: str, name: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{owner}.{name} must be a non-empty string, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class AttemptSpec:
    """One try of one step of one sub-job, as handed to :meth:`Runtime.start`.

    ``attempt_id`` is unique across the system (a runtime refuses a second start with the same
    id). ``session`` is stamped on every report so a receiver can drop reports from an older
    incarnation. ``timeout`` is in seconds (None: no deadline); when it fires the attempt is
    stopped with ``kill_grace`` seconds between the polite and the forced stop. The attempt's
    output goes to ``log_path``, of which the first ``log_limit`` bytes are kept.
    """

    attempt_id: str
    session: str
    job: str
    subjob: str
    target: str
    step: str
    attempt: int
    settings: StepSettings
    log_path: Path
    shard_index: int | None = None
    timeout: float | None = None
    kill_grace: float = DEFAULT_KILL_GRACE
    log_limit: int = DEFAULT_LOG_LIMIT

    def __post_init__(self) -> None:
        for name in ("attempt_id", "session", "job", "subjob", "target", "step"):
            _non_empty("AttemptSpec", name, getattr(self, name))
        if "\x00" in self.attempt_id or "\n" in self.attempt_id:
            raise ValueError("AttemptSpec.attempt_id may not contain NUL or newline characters")
        if isinstance(self.attempt, bool) or not isinstance(self.attempt, int) or self.attempt < 1:
            raise ValueError(f"AttemptSpec.attempt must be an integer >= 1, got {self.attempt!r}")
        if self.shard_index is not None and (
            isinstance(self.shard_index, bool)
            or not isinstance(self.shard_index, int)
            or self.shard_index < 0
        ):
            raise ValueError(
                f"AttemptSpec.shard_index must be an integer >= 0 or None, got {self.shard_index!r}"
            )
        if not isinstance(self.settings, InlineSettings | ProcessSettings):
            raise ValueError(
                f"AttemptSpec.settings must be InlineSettings or ProcessSettings, "
                f"got {type(self.settings).__name__}"
            )
        _positive_or_none("AttemptSpec", "timeout", self.timeout)
        if not math.isfinite(self.kill_grace) or self.kill_grace < 0:
            raise ValueError(
                f"AttemptSpec.kill_grace must be a finite number >= 0, got {self.kill_grace!r}"
            )
        if isinstance(self.log_limit, bool) or not isinstance(self.log_limit, int):
            raise ValueError(f"AttemptSpec.log_limit must be an integer, got {self.log_limit!r}")
        if self.log_limit < 0:
            raise ValueError(f"AttemptSpec.log_limit must be >= 0, got {self.log_limit!r}")
        given: object = self.log_path  # callers may pass a str
        if not isinstance(given, Path):
            object.__setattr__(self, "log_path", Path(cast("str | os.PathLike[str]", given)))


@dataclass(frozen=True, kw_only=True)
class RecoveryRecord:
    """What the store knew about an attempt left ``Running`` by a previous controller process.

    ``last_seq`` is the highest report sequence number the receiver accepted, so the ``Lost``
    report that :meth:`Runtime.recover` returns carries ``last_seq + 1``. ``pid`` and
    ``process_start_time`` come from the attempt's ``Running`` report (None when the crash
    happened before they were recorded); ``log_path``, when given, gets a line saying what
    recovery found.
    """

    attempt_id: str
    session: str
    last_seq: int = 1
    pid: int | None = None
    process_start_time: float | None = None
    log_path: Path | None = None

    def __post_init__(self) -> None:
        _non_empty("RecoveryRecord", "attempt_id", self.attempt_id)
        _non_empty("RecoveryRecord", "session", self.session)
        if self.last_seq < 0:
            raise ValueError(f"RecoveryRecord.last_seq must be >= 0, got {self.last_seq!r}")
        if self.pid is not None and self.pid <= 0:
            raise ValueError(f"RecoveryRecord.pid must be a positive integer, got {self.pid!r}")
