"""Conversion between :class:`StoredObject` and table rows, with validation on the way in.

JSON goes through orjson with sorted keys, so equal dicts always encode to equal text: the
store compares the encoded text to detect writes that change nothing. Datetimes, dataclasses
and other non-JSON values are refused (not silently turned into strings) so that what is read
back always equals what was written.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from cronloop.store.errors import InvalidObject
from cronloop.store.model import (
    JSONObject,
    StoredObject,
    validate_identity,
    validate_labels,
)

__all__ = [
    "Row",
    "decode_json",
    "encode_json",
    "encode_labels",
    "from_micros",
    "row_to_object",
    "row_to_object_as_written",
    "to_micros",
    "validated_row",
]

Row = dict[str, Any]
"""One ``objects`` row (column name to value), as read or about to be written."""

_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_json(kind: str, name: str, field: str, value: object) -> str:
    """Encode a JSON object canonically, or raise :class:`InvalidObject` naming ``field``."""
    if not isinstance(value, dict):
        raise InvalidObject(kind, name, field, f"must be a dict, got {type(value).__name__}")
    try:
        return orjson.dumps(value, option=_OPTIONS).decode()
    except orjson.JSONEncodeError as exc:
        raise InvalidObject(kind, name, field, f"is not JSON-serialisable: {exc}") from None


def encode_labels(kind: str, name: str, labels: object) -> str:
    """Validate labels and encode them canonically."""
    validate_labels(kind, name, labels)
    assert isinstance(labels, Mapping)  # checked above; narrows the type
    return orjson.dumps(dict(labels), option=orjson.OPT_SORT_KEYS).decode()


def decode_json(text: str) -> JSONObject:
    """Decode a JSON object written by :func:`encode_json`."""
    value: JSONObject = orjson.loads(text)
    return value


def to_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The aware UTC datetime ``micros`` microseconds after the Unix epoch."""
    # Rows share their times: those of one write, and an object's creation time at each of
    # its updates (the creates of one batch share it too). Building a datetime costs more
    # than the rest of a row's bookkeeping, so recent ones are kept, up to a bound. Threads
    # reading rows at once may both build one: a dict's single get and set are atomic.
    moment = _TIMES.get(micros)
    if moment is None:
        if len(_TIMES) >= _TIMES_KEPT:
            _TIMES.clear()
        moment = _TIMES[micros] = _EPOCH + timedelta(microseconds=micros)
    return moment


_TIMES: dict[int, datetime] = {}
_TIMES_KEPT = 4096


def _optional_key(kind: str, name: str, field: str, value: object, limit: int) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value or len(value) > limit:
        raise InvalidObject(kind, name, field, f"must be None or a string of 1..{limit} characters")


def validated_row(obj: object, *, argument: str = "obj") -> Row:
    """Check a new object completely and return its ``objects`` row, minus store-set fields.

    The row lacks ``uid``, ``resource_version``, ``generation`` and the timestamps; the store
    fills those in inside its transaction.
    """
    if not isinstance(obj, StoredObject):
        raise InvalidObject("", "", argument, f"must be a StoredObject, got {type(obj).__name__}")
    kind, name = obj.kind, obj.name
    validate_identity(kind, name)
    _optional_key(kind, name, "owner_uid", obj.owner_uid, 64)
    _optional_key(kind, name, "unique_key", obj.unique_key, 512)
    return {
        "kind": kind,
        "name": name,
        "owner_uid": obj.owner_uid,
        "unique_key": obj.unique_key,
        "labels": encode_labels(kind, name, obj.labels),
        "spec": encode_json(kind, name, "spec", obj.spec),
        "status": encode_json(kind, name, "status", obj.status),
    }


def row_to_object(row: Mapping[str, Any]) -> StoredObject:
    """Build the :class:`StoredObject` held by an ``objects`` or ``events`` row."""
    return StoredObject(
        row["kind"],
        row["name"],
        spec=decode_json(row["spec"]),
        status=decode_json(row["status"]),
        labels=decode_json(row["labels"]),
        owner_uid=row["owner_uid"],
        unique_key=row["unique_key"],
        uid=row["uid"],
        resource_version=row["resource_version"],
        generation=row["generation"],
        created_at=from_micros(row["created_at"]),
        updated_at=from_micros(row["updated_at"]),
    )


def _same_or_decoded(text: str, given: Mapping[str, Any], *, known: bool) -> Any:
    """``given`` if it is what ``text`` encodes (``known``: it was encoded from it), else the
    decoded text."""
    if known:
        return given
    try:
        if orjson.dumps(given, option=_OPTIONS).decode() == text:
            return given
    except (TypeError, orjson.JSONEncodeError):
        pass
    return decode_json(text)


def row_to_object_as_written(
    row: Mapping[str, Any], written: StoredObject, *, encoded: frozenset[str]
) -> StoredObject:
    """:func:`row_to_object` for a row just written from ``written``, sharing its JSON values.

    A write returns the object as stored; decoding the row again makes new dicts equal to
    the ones the caller passed. Those are reused instead (the store's contract: JSON values
    given to a write may be shared with what it returns). The parts named in ``encoded`` were
    encoded from ``written`` by this write, so they are the row's by construction; the others
    are reused only when they encode to exactly the row's text.
    """
    return StoredObject(
        row["kind"],
        row["name"],
        spec=_same_or_decoded(row["spec"], written.spec, known="spec" in encoded),
        status=_same_or_decoded(row["status"], written.status, known="status" in encoded),
        labels=_same_or_decoded(row["labels"], written.labels, known="labels" in encoded),
        owner_uid=row["owner_uid"],
        unique_key=row["unique_key"],
        uid=row["uid"],
        resource_version=row["resource_version"],
        generation=row["generation"],
        created_at=from_micros(row["created_at"]),
        updated_at=from_micros(row["updated_at"]),
    )
