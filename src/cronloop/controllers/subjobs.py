"""The sub-jobs of runs as their readers see them, stored or kept in their run.

A run with one target keeps its sub-job's status in its own (``status.subJob``, see
:mod:`cronloop.controllers.fanout`), and has no SubJob object. Everything that shows or
recovers sub-jobs (the API's list, get and watch, logs, ``cronloop up``'s printer, the Job
controller's recovery) reads them through this module, which makes the SubJob of such a run
from its Job, exactly as if it were stored: named ``<job>-<target>``, owned by and labelled
for its Job, at its Job's revision and times, with the uid ``<job uid>/<target>``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Mapping

import orjson

from cronloop.api import JobSpec, subjob_name
from cronloop.controllers._byidentity import ByIdentity
from cronloop.controllers.fanout import FanOutTemplate
from cronloop.controllers.objects import ANNOTATIONS_KEY, JOB_LABEL
from cronloop.store import ListResult, NotFound, Store, StoredObject, WatchEvent

__all__ = [
    "embedded_subjob",
    "get_subjob",
    "list_subjobs",
    "watched_kinds",
    "with_embedded_subjobs",
]

#: Templates of the Jobs shown with their sub-job: one per CronJob version's runs (they share
#: their spec), or per Job created directly.
_TEMPLATES: ByIdentity[FanOutTemplate | None] = ByIdentity(4096)
_TEXTS_KEPT = 1024
_BY_TEXT: OrderedDict[bytes, FanOutTemplate | None] = OrderedDict()


def embedded_subjob(job: StoredObject) -> StoredObject | None:
    """The SubJob a one-target run keeps in its Job, as if stored; None for a Job with no
    such sub-job (not fanned out yet, or with several targets)."""
    status = job.status.get("subJob")
    if job.kind != "Job" or not isinstance(status, dict):
        return None
    template = _template_of(job)
    if template is None or len(template.targets) != 1:
        return None
    target = template.targets[0]
    return StoredObject(
        "SubJob",
        subjob_name(job.name, target.target),
        spec={**target.spec, "job": {"name": job.name, "uid": job.uid}},
        status=status,
        labels={JOB_LABEL: job.name},
        owner_uid=job.uid,
        uid=f"{job.uid}/{target.target}",
        resource_version=job.resource_version,
        generation=1,
        created_at=job.created_at,
        updated_at=job.updated_at,
    )


async def list_subjobs(
    store: Store, *, labels: Mapping[str, str] | None = None, owner_uid: str | None = None
) -> ListResult:
    """Every sub-job matching ``labels`` and ``owner_uid``, stored or kept, by name."""
    stored, revision = await store.list("SubJob", labels=labels, owner_uid=owner_uid)
    selector = dict(labels or {})
    if owner_uid is not None:
        try:
            jobs = [await store.get_by_uid(owner_uid)]
        except NotFound:
            jobs = []
    elif JOB_LABEL in selector:
        try:
            jobs = [await store.get("Job", selector[JOB_LABEL])]
        except NotFound:
            jobs = []
    else:
        jobs = (await store.list("Job")).items
    kept = [
        sub
        for job in jobs
        if (sub := embedded_subjob(job)) is not None
        and all(sub.labels.get(key) == value for key, value in selector.items())
    ]
    return ListResult(sorted([*stored, *kept], key=lambda o: o.name), revision)


async def get_subjob(store: Store, name: str) -> StoredObject:
    """The sub-job ``name``, stored or kept in its run (whose name it begins with)."""
    try:
        return await store.get("SubJob", name)
    except NotFound:
        pass
    # "<job>-<target>": the run is one of the prefixes ending before a dash.
    for cut in (i for i, char in enumerate(name) if char == "-"):
        try:
            job = await store.get("Job", name[:cut])
        except NotFound:
            continue
        sub = embedded_subjob(job)
        if sub is not None and sub.name == name:
            return sub
    raise NotFound("SubJob", name)


async def with_embedded_subjobs(
    events: AsyncIterator[WatchEvent], kinds: Iterable[str] | None
) -> AsyncIterator[WatchEvent]:
    """``events`` (a watch of ``kinds`` plus Job when SubJob is among them) with the changes
    of kept sub-jobs as SubJob events: the run's changes, at its revisions."""
    chosen = None if kinds is None else set(kinds)
    try:
        async for event in events:
            obj = event.object
            if obj.kind == "Job" and (chosen is None or "SubJob" in chosen):
                # Before its run's event, as a stored sub-job's write comes before its run's.
                sub = embedded_subjob(obj)
                if sub is not None:
                    yield WatchEvent(event.type, sub, event.revision)
            if chosen is None or obj.kind in chosen:
                yield event
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()


def watched_kinds(kinds: Iterable[str] | None) -> list[str] | None:
    """The kinds to watch for :func:`with_embedded_subjobs` to show ``kinds``."""
    if kinds is None:
        return None
    chosen = list(kinds)
    if "SubJob" in chosen and "Job" not in chosen:
        chosen.append("Job")
    return chosen


def _template_of(job: StoredObject) -> FanOutTemplate | None:
    def make() -> FanOutTemplate | None:
        spec = dict(job.spec)
        spec.pop(ANNOTATIONS_KEY, None)
        # Runs read back from the database do not share their spec dicts, but one CronJob's
        # runs share their spec's text: validated once per text, not once per run.
        text = orjson.dumps(spec, option=orjson.OPT_SORT_KEYS)
        if text in _BY_TEXT:
            _BY_TEXT.move_to_end(text)
            return _BY_TEXT[text]
        template = FanOutTemplate.of(JobSpec.model_validate(spec))
        _BY_TEXT[text] = template
        if len(_BY_TEXT) > _TEXTS_KEPT:
            _BY_TEXT.popitem(last=False)
        return template

    return _TEMPLATES.get(job.spec, make)
