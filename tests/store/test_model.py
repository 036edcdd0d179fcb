"""The stored object's own helpers."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from cronloop.store import StoredObject


def test_with_status_keeps_every_other_field() -> None:
    # Every field set to a value unlike its default, so a field that with_status forgot
    # to copy (one added later, say) shows up as a difference.
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    values = {
        "spec": {"a": 1},
        "status": {"phase": "Running"},
        "labels": {"team": "ops"},
        "owner_uid": "o" * 32,
        "unique_key": "k@1",
        "uid": "u" * 32,
        "resource_version": 7,
        "generation": 3,
        "created_at": when,
        "updated_at": when,
    }
    fields = {f.name for f in dataclasses.fields(StoredObject)} - {"kind", "name"}
    assert set(values) == fields
    obj = StoredObject("Job", "nightly-1", **values)  # type: ignore[arg-type]
    new = {"phase": "Succeeded"}
    assert obj.with_status(new) == dataclasses.replace(obj, status=new)
    assert obj.with_status(new).status is new
    assert obj.status == {"phase": "Running"}
