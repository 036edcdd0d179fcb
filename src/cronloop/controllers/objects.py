"""Conversions between the typed resources of :mod:`cronloop.api` and the store's envelope.

The store keeps generic :class:`~cronloop.store.StoredObject` envelopes (identity, JSON spec and
status, labels, owner uid, unique key); controllers and the server work with the typed models.
Owner references are not stored separately: a Job's owner is the CronJob named in its status, a
SubJob's owner is the Job named in its spec, and :func:`from_stored` rebuilds the references
from those. Annotations ride in the envelope's ``spec`` under a reserved key, so that nothing a
user wrote is dropped.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter

from cronloop.api import (
    KINDS,
    CronJob,
    Job,
    ObjectMeta,
    OwnerReference,
    Resource,
    SubJob,
    dump,
)
from cronloop.store import StoredObject

__all__ = [
    "ANNOTATIONS_KEY",
    "CRONJOB_LABEL",
    "JOB_LABEL",
    "ResourceT",
    "dump_model",
    "from_stored",
    "json_time",
    "replacing",
    "run_unique_key",
    "to_stored",
    "typed",
]

#: Label on every Job a CronJob created, naming the CronJob (for listing its history).
CRONJOB_LABEL = "cronloop.dev/cronjob"
#: Label on every SubJob, naming its Job.
JOB_LABEL = "cronloop.dev/job"

#: Where a stored spec keeps its resource's annotations.
ANNOTATIONS_KEY = "__annotations__"

ResourceT = TypeVar("ResourceT", CronJob, Job, SubJob)


def run_unique_key(cronjob_uid: str, scheduled_time: datetime) -> str:
    """The identity of one scheduled run: ``<cronjob uid>@<unix seconds>``.

    The store refuses a second object with the same key, so two schedulers (or one scheduler
    before and after a crash) cannot create the same run twice.
    """
    return f"{cronjob_uid}@{int(scheduled_time.timestamp())}"


def to_stored(
    resource: Resource, *, owner_uid: str | None = None, unique_key: str | None = None
) -> StoredObject:
    """The envelope of ``resource`` (``uid`` and ``resource_version`` carried over if set)."""
    data = dump(resource)
    spec: dict[str, Any] = dict(data.get("spec", {}))
    if resource.metadata.annotations:
        spec[ANNOTATIONS_KEY] = dict(resource.metadata.annotations)
    owner = owner_uid
    if owner is None and resource.metadata.owner_references:
        owner = resource.metadata.owner_references[0].uid
    return StoredObject(
        resource.kind,
        resource.metadata.name,
        spec=spec,
        status=dict(data.get("status", {})),
        labels=dict(resource.metadata.labels),
        owner_uid=owner,
        unique_key=unique_key,
        uid=resource.metadata.uid or "",
        resource_version=resource.metadata.resource_version or 0,
    )


def dump_model(part: BaseModel) -> dict[str, Any]:
    """The stored form of a part of a resource, e.g. its status (camelCase keys, unset fields
    left out), exactly as it appears in :func:`to_stored`."""
    return part.model_dump(mode="json", by_alias=True, exclude_none=True)


_TIME = TypeAdapter(datetime)


def json_time(moment: datetime) -> str:
    """``moment`` as the API stores a time (pydantic's own JSON form of it), for the parts of
    a stored status built without a model."""
    text: str = _TIME.dump_python(moment, mode="json")
    return text


def replacing(current: StoredObject, resource: Resource) -> StoredObject:
    """The envelope that writes ``resource`` over ``current``, keeping what cannot change.

    ``owner_uid`` and ``unique_key`` are fixed at creation; the compare-and-set version is
    ``current``'s unless ``resource`` carries a newer one.
    """
    stored = to_stored(resource, owner_uid=current.owner_uid, unique_key=current.unique_key)
    version = max(stored.resource_version, current.resource_version)
    return dataclasses.replace(stored, uid=current.uid, resource_version=version)


def _owner_references(
    kind: str, spec: dict[str, Any], status: dict[str, Any], owner: str | None
) -> list[dict[str, str]]:
    if owner is None:
        return []
    if kind == "Job" and isinstance(status.get("cronJob"), dict):
        return [{"kind": "CronJob", "name": status["cronJob"]["name"], "uid": owner}]
    if kind == "SubJob" and isinstance(spec.get("job"), dict):
        return [{"kind": "Job", "name": spec["job"]["name"], "uid": owner}]
    return []


def from_stored(obj: StoredObject) -> Resource:
    """The typed resource held by ``obj``.

    :raises KeyError: ``obj.kind`` is not a kind of this API version.
    :raises pydantic.ValidationError: the stored JSON does not validate (a bug or a downgrade).
    """
    model = KINDS[obj.kind]
    spec = dict(obj.spec)
    annotations = spec.pop(ANNOTATIONS_KEY, {})
    refs = _owner_references(obj.kind, spec, obj.status, obj.owner_uid)
    metadata = ObjectMeta(
        name=obj.name,
        uid=obj.uid or None,
        resource_version=obj.resource_version,
        generation=obj.generation,
        creation_timestamp=obj.created_at,
        labels=dict(obj.labels),
        annotations=annotations,
        owner_references=tuple(OwnerReference.model_validate(r) for r in refs),
    )
    return model.model_validate(
        {
            "apiVersion": "cronloop.dev/v1",
            "kind": obj.kind,
            "metadata": metadata,
            "spec": spec,
            "status": obj.status,
        }
    )


def typed(obj: StoredObject, model: type[ResourceT]) -> ResourceT:
    """:func:`from_stored`, checked to be of ``model``'s kind."""
    resource = from_stored(obj)
    if not isinstance(resource, model):
        raise TypeError(f"{obj.ref} is not a {model.__name__}")
    return resource
