"""Validation of the runtime data types: every bad field is refused with a message naming it."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest

import cronloop.runtimes as runtimes
from cronloop.api.phase import Phase
from cronloop.runtimes.base import Runtime
from cronloop.runtimes.report import AttemptReport, Reason, signal_name
from cronloop.runtimes.spec import (
    AttemptSpec,
    InlineSettings,
    ProcessSettings,
    RecoveryRecord,
)
from tests.runtimes.helpers import make_spec


def test_process_settings_normalise_the_command() -> None:
    assert ProcessSettings(["echo", "a b"]).argv == ("echo", "a b")
    assert ProcessSettings("echo 'a b' $X").argv == ("echo", "a b", "$X")
    assert ProcessSettings("echo $X | wc", shell=True).argv == ("/bin/sh", "-c", "echo $X | wc")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"command": []}, r"ProcessSettings\.command must be a non-empty list"),
        ({"command": ""}, r"ProcessSettings\.command must be a non-empty list"),
        ({"command": ["ls", 3]}, r"ProcessSettings\.command must be a non-empty list"),
        ({"command": ["ls", "a\x00b"]}, "may not contain NUL"),
        ({"command": ["ls"], "shell": True}, "non-empty string when shell is true"),
        ({"command": "ls", "env": {"A=B": "x"}}, r"env: 'A=B' is not a valid variable name"),
        ({"command": "ls", "env": {"CRONLOOP_TARGET": "x"}}, "'CRONLOOP_TARGET' is reserved"),
        ({"command": "ls", "env": {"TOKEN": 3}}, r"env\['TOKEN'\] must be a string"),
    ],
)
def test_process_settings_refuse_bad_fields(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ProcessSettings(**kwargs)  # type: ignore[arg-type]


def test_env_values_are_never_echoed_in_errors() -> None:
    with pytest.raises(ValueError) as info:
        ProcessSettings("ls", env={"TOKEN": "s3cret\x00"})
    assert "s3cret" not in str(info.value)


def test_settings_are_immutable() -> None:
    env = {"A": "1"}
    settings = ProcessSettings("ls", env=env)
    env["A"] = "2"
    assert settings.env["A"] == "1"
    with pytest.raises(TypeError):
        settings.env["B"] = "3"  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"callable": "module.function"}, "must look like 'package.module:function'"),
        ({"callable": "mod:"}, "must look like"),
        ({"callable": "1mod:f"}, "must look like"),
        ({"callable": "mod:f", "kwargs": {"ctx": 1}}, "may not contain 'ctx'"),
        ({"callable": "mod:f", "kwargs": {"not valid": 1}}, "'not valid' is not a valid argument"),
    ],
)
def test_inline_settings_refuse_bad_fields(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        InlineSettings(**kwargs)  # type: ignore[arg-type]


def test_inline_settings_split_the_callable() -> None:
    settings = InlineSettings("pkg.mod:Class.method")
    assert (settings.module, settings.attribute) == ("pkg.mod", "Class.method")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("attempt_id", "", r"AttemptSpec\.attempt_id must be a non-empty string"),
        ("attempt_id", "a\nb", "may not contain NUL or newline"),
        ("session", "", r"AttemptSpec\.session must be a non-empty string"),
        ("attempt", 0, r"AttemptSpec\.attempt must be an integer >= 1"),
        ("attempt", True, r"AttemptSpec\.attempt must be an integer >= 1"),
        ("shard_index", -1, r"AttemptSpec\.shard_index must be an integer >= 0"),
        ("timeout", 0, r"AttemptSpec\.timeout must be a positive number"),
        ("timeout", float("nan"), r"AttemptSpec\.timeout must be a positive number"),
        ("kill_grace", -1.0, r"AttemptSpec\.kill_grace must be a finite number >= 0"),
        ("log_limit", -1, r"AttemptSpec\.log_limit must be >= 0"),
        ("log_limit", 1.5, r"AttemptSpec\.log_limit must be an integer"),
        ("settings", "ls", r"AttemptSpec\.settings must be InlineSettings or ProcessSettings"),
    ],
)
def test_attempt_spec_refuses_bad_fields(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    valid = make_spec(tmp_path, ProcessSettings("ls"))
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(valid, **{field: value})  # type: ignore[arg-type]


def test_attempt_spec_accepts_a_string_log_path(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, ProcessSettings("ls"), log_path=str(tmp_path / "x.log"))
    assert spec.log_path == tmp_path / "x.log"
    assert isinstance(spec, AttemptSpec)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempt_id": "", "session": "s"}, r"RecoveryRecord\.attempt_id"),
        ({"attempt_id": "a", "session": ""}, r"RecoveryRecord\.session"),
        ({"attempt_id": "a", "session": "s", "last_seq": -1}, r"RecoveryRecord\.last_seq"),
        ({"attempt_id": "a", "session": "s", "pid": 0}, r"RecoveryRecord\.pid"),
    ],
)
def test_recovery_record_refuses_bad_fields(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RecoveryRecord(**kwargs)  # type: ignore[arg-type]


def _report(**overrides: object) -> AttemptReport:
    fields: dict[str, object] = {
        "attempt_id": "a",
        "session": "s",
        "seq": 1,
        "phase": Phase.RUNNING,
        "reason": Reason.STARTED,
        "reported_at": datetime.now(UTC),
    }
    fields.update(overrides)
    return AttemptReport(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"seq": 0}, r"AttemptReport\.seq must be >= 1"),
        ({"phase": Phase.PREPARED}, "Prepared is not reported by runtimes"),
        ({"reason": ""}, r"AttemptReport\.reason must be a non-empty"),
        ({"reported_at": datetime(2026, 1, 1)}, "must be timezone-aware"),
    ],
)
def test_attempt_report_refuses_bad_fields(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _report(**overrides)


def test_report_terminal_and_signal_names() -> None:
    assert not _report().terminal
    assert _report(phase=Phase.LOST, reason=Reason.PROCESS_GONE).terminal
    assert signal_name(9) == "SIGKILL"
    assert signal_name(200) == "SIG200"


def test_package_exports_resolve_and_runtimes_implement_the_contract() -> None:
    for name in runtimes.__all__:
        assert getattr(runtimes, name) is not None, name
    # Order is ruff's (RUF022, constants first); what matters is that nothing repeats.
    assert len(set(runtimes.__all__)) == len(runtimes.__all__)
    for runtime in (runtimes.InlineRuntime, runtimes.ProcessRuntime):
        assert issubclass(runtime, Runtime)
        assert not runtime.__abstractmethods__
