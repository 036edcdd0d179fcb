"""What the API shows of a resource, and how a user's write is turned into a stored object.

**Secrets.** A process step's ``env`` may carry secrets, so every value of every ``env`` map is
shown as ``"***"`` in API output (names stay visible). A resource read from the API and sent
back (``get -o yaml``, edit, ``apply``) therefore carries ``"***"`` values; on apply, an env
value that is exactly ``"***"`` keeps the stored value of that variable, so the round trip never
overwrites a secret with its mask.

**What users may write.** ``spec``, ``metadata.labels`` and ``metadata.annotations``. The
``status`` of a body is ignored (controllers own it), as are the fields the store assigns
(``uid``, ``resourceVersion``, ``generation``, ``creationTimestamp``) and ``ownerReferences``
(ownership is set by cronloop). Label and annotation keys under ``cronloop.dev/`` are written by
cronloop (the CronJob label of a run, the guarantee and cancel annotations): an apply that
leaves one out keeps the stored value.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cronloop.api import CronJob, Job, ObjectMeta, Resource, ResourceError, SubJob, dump
from cronloop.controllers.objects import from_stored, to_stored
from cronloop.store import StoredObject

__all__ = [
    "REDACTED",
    "SYSTEM_PREFIX",
    "prepare_write",
    "present",
    "present_stored",
    "redact",
]

#: What API output shows instead of an env value.
REDACTED = "***"
#: Label and annotation keys under this prefix belong to cronloop.
SYSTEM_PREFIX = "cronloop.dev/"

_STEPS = ("prepare", "main")


def _steps(data: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(field path, step dict)`` of every step in a dumped resource."""
    spec = data.get("spec")
    if not isinstance(spec, dict):
        return
    base, holder = "spec", spec
    if data.get("kind") == "CronJob":
        template = spec.get("jobTemplate")
        if not isinstance(template, dict):
            return
        base, holder = "spec.jobTemplate", template
    for step in _STEPS:
        value = holder.get(step)
        if isinstance(value, dict):
            yield f"{base}.{step}", value


def redact(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a dumped resource) with every step's env values replaced by ``"***"``.

    The input is not modified: the dicts on the way to each step are copied.
    """
    out = dict(data)
    if not isinstance(out.get("spec"), dict):
        return out
    _copy_steps(out)
    for _, step in _steps(out):
        env = step.get("env")
        if isinstance(env, dict) and env:
            step["env"] = dict.fromkeys(env, REDACTED)
    return out


def _copy_steps(data: dict[str, Any]) -> None:
    """Make every step dict of ``data`` its own copy (so it can be modified in place)."""
    spec = data["spec"] = dict(data["spec"])
    holder = spec
    if data.get("kind") == "CronJob":
        if not isinstance(spec.get("jobTemplate"), dict):
            return
        holder = spec["jobTemplate"] = dict(spec["jobTemplate"])
    for step in _STEPS:
        if isinstance(holder.get(step), dict):
            holder[step] = dict(holder[step])
            if isinstance(holder[step].get("env"), dict):
                holder[step]["env"] = dict(holder[step]["env"])


def present(resource: Resource) -> dict[str, Any]:
    """The API's JSON of ``resource``: camelCase, unset fields left out, env values masked."""
    return redact(dump(resource))


def present_stored(obj: StoredObject) -> dict[str, Any]:
    """:func:`present` of a stored object."""
    return present(from_stored(obj))


def _restore_secrets(resource: Resource, stored: Resource, where: str) -> Resource:
    data = dump(resource)
    old = dict(_steps(dump(stored)))
    _copy_steps(data)
    changed = False
    problems: list[tuple[str, str]] = []
    for path, step in _steps(data):
        env = step.get("env")
        if not isinstance(env, dict):
            continue
        old_env = old.get(path, {}).get("env") or {}
        for name, value in env.items():
            if value != REDACTED:
                continue
            if name in old_env:
                env[name] = old_env[name]
                changed = True
            else:
                problems.append(
                    (
                        f"{path}.env.{name}",
                        (
                            f"value is {REDACTED!r} (a masked secret) but the stored object "
                            "has no such variable to keep; give the real value"
                        ),
                    )
                )
    if problems:
        raise ResourceError(where, problems)
    # Only env values changed, each to a value that validated when it was stored.
    return type(resource).model_validate(data) if changed else resource


def _merge_system(user: dict[str, str], stored: dict[str, str]) -> dict[str, str]:
    kept = {k: v for k, v in stored.items() if k.startswith(SYSTEM_PREFIX)}
    return {**kept, **user}


def prepare_write(
    resource: Resource, stored: StoredObject | None, *, source: str = "request body"
) -> StoredObject:
    """The stored object a user's create or apply of ``resource`` writes.

    ``stored`` is the current object for an apply that updates (``None`` for a create): its
    owner, unique key and version are kept (the write is a compare-and-set on that version),
    its masked secrets restored and its ``cronloop.dev/`` labels and annotations kept.

    :raises ResourceError: an env value is masked and there is no stored value to keep.
    """
    metadata = ObjectMeta(
        name=resource.metadata.name,
        labels=dict(resource.metadata.labels),
        annotations=dict(resource.metadata.annotations),
    )
    clean: Resource
    if isinstance(resource, CronJob):
        clean = CronJob(metadata=metadata, spec=resource.spec)
    elif isinstance(resource, Job):
        clean = Job(metadata=metadata, spec=resource.spec)
    else:
        clean = SubJob(metadata=metadata, spec=resource.spec)
    where = f'{source}: {resource.kind} "{resource.metadata.name}"'
    if stored is None:
        _refuse_masked(clean, where)
        return to_stored(clean)
    current = from_stored(stored)
    clean = _restore_secrets(clean, current, where)
    merged = clean.metadata.model_copy(
        update={
            "labels": _merge_system(dict(clean.metadata.labels), dict(stored.labels)),
            "annotations": _merge_system(
                dict(clean.metadata.annotations), dict(current.metadata.annotations)
            ),
            "uid": stored.uid,
            "resource_version": stored.resource_version,
        }
    )
    clean = clean.model_copy(update={"metadata": merged})
    return to_stored(clean, owner_uid=stored.owner_uid, unique_key=stored.unique_key)


def _refuse_masked(resource: Resource, where: str) -> None:
    problems = [
        (f"{path}.env.{name}", f"value is {REDACTED!r} (a masked secret); give the real value")
        for path, step in _steps(dump(resource))
        for name, value in (step.get("env") or {}).items()
        if value == REDACTED
    ]
    if problems:
        raise ResourceError(where, problems)
