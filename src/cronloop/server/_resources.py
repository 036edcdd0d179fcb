"""The resource endpoints: list, get, create, apply and delete CronJobs, Jobs and SubJobs.

``/apis/cronloop.dev/v1/{plural}[/{name}]`` in the manner of the Kubernetes API. Bodies are a
resource in JSON (or YAML with ``Content-Type: application/yaml``) and are validated with the
same rules and messages as ``cronloop apply`` uses locally. See :mod:`cronloop.server._present`
for what a user may write and how secrets are masked.

SubJobs are read-only here: the Job controller creates them from their Job, and a SubJob
written by hand would run outside its Job's policies, so writes are refused with 403.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from cronloop.api import (
    API_VERSION,
    Job,
    Resource,
    ResourceError,
    SubJob,
    check_label,
    load_resources,
    parse_resource,
)
from cronloop.controllers.objects import from_stored
from cronloop.controllers.subjobs import get_subjob, list_subjobs
from cronloop.server._context import KIND_OF_PLURAL, ServerContext
from cronloop.server._errors import ApiError
from cronloop.server._present import prepare_write, present_stored
from cronloop.store import AlreadyExists, Conflict, NotFound, Store, StoredObject

__all__ = [
    "APPLY_HEADER",
    "MAX_BODY_BYTES",
    "apply_to_store",
    "check_apply",
    "parse_label_selector",
    "read_resource",
    "resource_router",
]

#: Response header of an apply: ``created``, ``configured`` or ``unchanged``.
APPLY_HEADER = "Cronloop-Apply"
#: Largest request body accepted (a resource with 10,000 targets is well under this).
MAX_BODY_BYTES = 4 * 1024 * 1024
_APPLY_TRIES = 10
_SOURCE = "request body"


def kind_of(plural: str) -> str:
    """The kind served at ``plural``; 404 for an unknown resource type."""
    try:
        return KIND_OF_PLURAL[plural]
    except KeyError:
        known = ", ".join(KIND_OF_PLURAL)
        raise ApiError(404, f"unknown resource type {plural!r} (expected one of {known})") from None


def parse_label_selector(text: str | None) -> dict[str, str]:
    """``"a=b,c=d"`` as ``{"a": "b", "c": "d"}``; an ``ApiError`` (422) names a bad term."""
    selector: dict[str, str] = {}
    if not text:
        return selector
    for term in text.split(","):
        key, sep, value = term.strip().partition("=")
        if not sep or not key:
            raise ApiError(422, f"labelSelector: {term.strip()!r} is not of the form key=value")
        try:
            check_label(key, value)
        except ValueError as exc:
            raise ApiError(422, f"labelSelector: {exc}") from None
        selector[key] = value
    return selector


async def _read_body(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, f"{_SOURCE}: larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_resource(request: Request, kind: str) -> Resource:
    """The resource in the request body (JSON, or YAML when the content type says so).

    :raises ApiError: 422 for a body that is not one valid resource of ``kind``.
    """
    raw = await _read_body(request)
    content_type = request.headers.get("content-type", "")
    if "yaml" in content_type:
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise ApiError(422, f"{_SOURCE}: is not UTF-8 text") from None
        resources = load_resources(text, source=_SOURCE)
        if len(resources) != 1:
            raise ApiError(422, f"{_SOURCE}: expected one resource, got {len(resources)}")
        resource = resources[0]
    else:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(422, f"{_SOURCE}: invalid JSON: {exc}") from None
        resource = parse_resource(data, source=_SOURCE)
    if resource.kind != kind:
        raise ApiError(422, f"{_SOURCE}: kind: expected {kind} here, got {resource.kind}")
    return resource


def _refuse_subjob_write(kind: str) -> None:
    if kind == "SubJob":
        raise ApiError(
            403, "SubJobs are created and written by the Job controller; create a Job instead"
        )


def _list_body(kind: str, items: list[StoredObject], revision: int, more: str | None) -> Any:
    metadata: dict[str, Any] = {"resourceVersion": revision}
    if more is not None:
        metadata["continue"] = more
    return {
        "apiVersion": API_VERSION,
        "kind": f"{kind}List",
        "metadata": metadata,
        "items": [present_stored(obj) for obj in items],
    }


def resource_router(ctx: ServerContext) -> APIRouter:
    """The CRUD routes over ``ctx.store``."""
    router = APIRouter()
    store = ctx.store

    @router.get("/apis/cronloop.dev/v1/{plural}")
    async def list_resources(
        plural: str,
        label_selector: str | None = Query(None, alias="labelSelector"),
        owner: str | None = Query(None, min_length=1),
        limit: int | None = Query(None, ge=1, le=10_000),
        continue_: str | None = Query(None, alias="continue", min_length=1),
    ) -> Any:
        """List the objects of a kind (``?labelSelector=a=b,c=d``, ``?owner=<uid>``)."""
        kind = kind_of(plural)
        selector = parse_label_selector(label_selector)
        if kind == "SubJob":
            # With the sub-jobs one-target runs keep (made from their Jobs, in memory).
            items, revision = await list_subjobs(store, labels=selector, owner_uid=owner)
            if continue_ is not None:
                items = [o for o in items if o.name > continue_]
            if limit is not None:
                items = items[: limit + 1]
        else:
            items, revision = await store.list(
                kind,
                labels=selector,
                owner_uid=owner,
                limit=None if limit is None else limit + 1,
                after=continue_,
            )
        more = None
        if limit is not None and len(items) > limit:
            items = items[:limit]
            more = items[-1].name
        return _list_body(kind, items, revision, more)

    @router.get("/apis/cronloop.dev/v1/{plural}/{name}")
    async def get_resource(plural: str, name: str) -> Any:
        """One object."""
        kind = kind_of(plural)
        if kind == "SubJob":
            return present_stored(await get_subjob(store, name))
        return present_stored(await store.get(kind, name))

    @router.post("/apis/cronloop.dev/v1/{plural}", status_code=201)
    async def create_resource(plural: str, request: Request) -> Any:
        """Create an object from the body; 409 if the name is taken."""
        kind = kind_of(plural)
        _refuse_subjob_write(kind)
        resource = await read_resource(request, kind)
        return present_stored(await store.create(prepare_write(resource, None)))

    @router.put("/apis/cronloop.dev/v1/{plural}/{name}")
    async def apply_resource(plural: str, name: str, request: Request) -> Any:
        """Create the object, or make its spec, labels and annotations equal to the body's."""
        kind = kind_of(plural)
        _refuse_subjob_write(kind)
        resource = await read_resource(request, kind)
        if resource.metadata.name != name:
            raise ApiError(
                422,
                f"{_SOURCE}: metadata.name: {resource.metadata.name!r} does not match the name "
                f"in the URL {name!r}",
            )
        stored, outcome = await apply_to_store(store, resource)
        return JSONResponse(
            present_stored(stored),
            status_code=201 if outcome == "created" else 200,
            headers={APPLY_HEADER: outcome},
        )

    @router.delete("/apis/cronloop.dev/v1/{plural}/{name}")
    async def delete_resource(plural: str, name: str) -> Any:
        """Delete an object and everything it owns (a CronJob's runs, a Job's sub-jobs)."""
        kind = kind_of(plural)
        _refuse_subjob_write(kind)
        return present_stored(await store.delete(kind, name))

    return router


async def apply_to_store(
    store: Store, resource: Resource, *, source: str = _SOURCE
) -> tuple[StoredObject, str]:
    """Create ``resource`` or compare-and-set update it, as ``cronloop apply`` and the spec
    directory of ``cronloop up`` both do; returns the stored object and the outcome
    (``created``, ``configured`` or ``unchanged``).

    A concurrent writer makes the compare-and-set fail: the loop re-reads and decides again,
    as ``kubectl apply`` does, instead of overwriting what it did not see.

    :raises ResourceError: the write is refused (see :func:`check_apply`), or an env value is
        masked with no stored value to keep; ``source`` names where the resource came from.
    """
    _refuse_subjob(resource, source)
    kind, name = resource.kind, resource.metadata.name
    for _ in range(_APPLY_TRIES):
        try:
            current = await store.get(kind, name)
        except NotFound:
            try:
                created = await store.create(prepare_write(resource, None, source=source))
            except AlreadyExists as exc:
                if exc.field != "name":
                    raise
                continue  # created meanwhile: update it instead
            return created, "created"
        obj = prepare_write(resource, current, source=source)
        if isinstance(resource, Job):
            _refuse_job_spec_change(from_stored(current), from_stored(obj), source)
        try:
            stored = await store.update(obj)
        except (Conflict, NotFound):
            continue
        changed = stored.resource_version != current.resource_version
        return stored, "configured" if changed else "unchanged"
    raise ApiError(409, f'{kind} "{name}" kept changing while it was applied; try again')


async def check_apply(store: Store, resource: Resource, *, source: str = _SOURCE) -> None:
    """Raise :class:`ResourceError` if :func:`apply_to_store` would refuse ``resource`` as it
    stands (a SubJob; a Job whose spec differs from the stored one's), writing nothing: so
    that several resources can be checked before any of them is written."""
    _refuse_subjob(resource, source)
    if isinstance(resource, Job):
        try:
            current = await store.get(resource.kind, resource.metadata.name)
        except NotFound:
            return
        new = prepare_write(resource, current, source=source)
        _refuse_job_spec_change(from_stored(current), from_stored(new), source)


def _refuse_subjob(resource: Resource, source: str) -> None:
    if isinstance(resource, SubJob):
        raise ResourceError(
            f'{source}: SubJob "{resource.metadata.name}"',
            [("kind", "SubJobs are written by the Job controller; write a Job instead")],
        )


def _refuse_job_spec_change(current: Resource, new: Resource, source: str) -> None:
    # A Job's spec is copied into its sub-jobs when it fans out; changing it afterwards would
    # describe work that is not what runs. Kubernetes makes a Job's template immutable too.
    if current.spec != new.spec:
        raise ResourceError(
            f'{source}: Job "{current.metadata.name}"',
            [("spec", "a Job's spec cannot change once created (delete and re-create the Job)")],
        )
