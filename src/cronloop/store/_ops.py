"""Transaction bodies of the SQL backends, written in SQLAlchemy Core on a sync Connection.

Each function runs inside a transaction the backend opened and holds the database's write
lock for (SQLite: ``BEGIN IMMEDIATE``). Nothing here is SQLite-specific, so a PostgreSQL
backend reuses these bodies and brings its own locking of the ``store_meta`` row (and a
savepoint around inserts, since PostgreSQL aborts a transaction on a unique violation).

Writes check their preconditions (versions, uids, owners, immutable fields) before changing
anything; what only the database decides, a unique-key clash, raises from the insert and is
undone with the write's transaction or savepoint.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from sqlalchemy import BindParameter, and_, bindparam, delete, literal, select, update
from sqlalchemy.engine import Connection

from cronloop.store._bulk import bulk_insert, bulk_update_objects, existing_uids, objects_named
from cronloop.store._codec import Row
from cronloop.store._prepared import Prepared, fetch_all
from cronloop.store._schema import events, object_labels, objects, store_meta
from cronloop.store.errors import AlreadyExists, Conflict, InvalidObject, NotFound
from cronloop.store.model import EventType

__all__ = [
    "ApplyWrite",
    "BatchOutcome",
    "BatchRows",
    "BatchWrite",
    "CompactWrite",
    "DeleteWrite",
    "UpdateRequest",
    "WriteMode",
    "apply_row",
    "commit_batch",
    "compact",
    "create_rows",
    "delete_tree",
    "events_after",
    "get_row",
    "get_row_by_uid",
    "list_rows",
    "read_revision",
    "update_rows",
]

WriteMode = Literal["spec", "status"]

# SQLite allows 32766 host parameters per statement since 3.32; stay far below on any dialect
# (a power of two: batch lookups pad their IN lists to one).
_CHUNK = 512

# The statements every write runs: compiled once, run on the DBAPI cursor (see _prepared).
_ALLOCATE = Prepared(
    update(store_meta)
    .where(store_meta.c.id == 1)
    .values(revision=store_meta.c.revision + bindparam("n"))
    .returning(store_meta.c.revision, store_meta.c.compacted_before)
)
_READ_META = Prepared(
    select(store_meta.c.revision, store_meta.c.compacted_before).where(store_meta.c.id == 1)
)
_GET = Prepared(
    select(objects).where(objects.c.kind == bindparam("kind"), objects.c.name == bindparam("name"))
)
_GET_UID = Prepared(select(objects).where(objects.c.uid == bindparam("uid")))
_OWNER_EXISTS = Prepared(select(objects.c.uid).where(objects.c.uid == bindparam("uid")))
# Batch lookups by name, one prepared statement per power-of-two list length (lists are
# padded by repeating a name), so batches of any size reuse a handful of compiled statements.
_GET_NAMED: dict[int, Prepared] = {}


def _get_named(size: int) -> Prepared:
    prepared = _GET_NAMED.get(size)
    if prepared is None:
        names: list[BindParameter[str]] = [bindparam(f"n{i}") for i in range(size)]
        query = select(objects).where(
            objects.c.kind == bindparam("kind"), objects.c.name.in_(names)
        )
        prepared = _GET_NAMED.setdefault(size, Prepared(query))
    return prepared


def _rows_named(conn: Connection, kind: str, names: Sequence[str]) -> list[Row]:
    size = 1 << max(len(names) - 1, 0).bit_length()
    params: dict[str, str] = {"kind": kind}
    for i in range(size):
        params[f"n{i}"] = names[min(i, len(names) - 1)]
    return _get_named(size).fetch(conn, params)


_INSERT_OBJECT = Prepared(objects.insert())
_INSERT_EVENT = Prepared(events.insert())
_INSERT_LABEL = Prepared(object_labels.insert())
_DELETE_LABELS = Prepared(delete(object_labels).where(object_labels.c.uid == bindparam("b_uid")))
_UPDATE_OBJECT = Prepared(
    update(objects)
    .where(
        objects.c.uid == bindparam("b_uid"),
        objects.c.resource_version == bindparam("b_expected"),
    )
    .values(
        labels=bindparam("labels"),
        spec=bindparam("spec"),
        status=bindparam("status"),
        generation=bindparam("generation"),
        resource_version=bindparam("resource_version"),
        updated_at=bindparam("updated_at"),
    )
)


class UpdateRequest(NamedTuple):
    """One validated compare-and-set write: new encoded parts of the object named.

    ``labels`` and ``spec`` are set for spec writes, ``status`` for status writes; the others
    are None. ``uid`` (if not empty) must match the stored uid. A named tuple rather than a
    dataclass: one goes to the writer process per updated row, and a tuple pickles several
    times faster.
    """

    kind: str
    name: str
    uid: str
    expected_version: int
    owner_uid: str | None
    unique_key: str | None
    labels: str | None = None
    spec: str | None = None
    status: str | None = None


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _allocate(conn: Connection, count: int) -> int:
    """Reserve ``count`` revisions and return the first one."""
    head = int(_ALLOCATE.fetch(conn, {"n": count})[0]["revision"])
    return head - count + 1


def _event(row: Row, event_type: EventType) -> Row:
    return {**row, "revision": row["resource_version"], "type": event_type.value}


def _label_rows(row: Row, labels: Mapping[str, str]) -> list[Row]:
    return [
        {"uid": row["uid"], "key": key, "value": value, "kind": row["kind"]}
        for key, value in labels.items()
    ]


def read_revision(conn: Connection) -> tuple[int, int]:
    """``(revision, compacted_before)`` as of this transaction's snapshot."""
    meta = _READ_META.fetch(conn, {})[0]
    return int(meta["revision"]), int(meta["compacted_before"])


def get_row(conn: Connection, kind: str, name: str) -> Row | None:
    """The ``objects`` row of ``kind``/``name``, or None."""
    found = _GET.fetch(conn, {"kind": kind, "name": name})
    return found[0] if found else None


def get_row_by_uid(conn: Connection, uid: str) -> Row | None:
    """The ``objects`` row whose uid is ``uid``, or None."""
    found = _GET_UID.fetch(conn, {"uid": uid})
    return found[0] if found else None


# ---- create ---------------------------------------------------------------------------------


def _events_by_database(conn: Connection) -> bool:
    """Whether the database writes ADDED and MODIFIED events itself (SQLite: triggers of
    migration 0002); other dialects insert them with the objects."""
    return conn.dialect.name == "sqlite"


def _check_owner_order(rows: Sequence[Row]) -> None:
    """An owner earlier in the batch counts (its row is inserted first); a later one does not.

    Owners already stored are the foreign key's business: a missing one fails the insert,
    and :func:`_raise_missing_owner` then names it.
    """
    position = {row["uid"]: index for index, row in enumerate(rows)}
    for index, row in enumerate(rows):
        owner = row["owner_uid"]
        if owner is not None and position.get(owner, -1) > index:
            raise InvalidObject(
                row["kind"], row["name"], "owner_uid", "its owner comes after it in the batch"
            )


def _raise_missing_owner(conn: Connection, rows: Sequence[Row]) -> None:
    """After a failed insert: raise NotFound for the first row whose owner is not stored (nor
    in the batch), if there is one."""
    in_batch = {row["uid"] for row in rows}
    owners = sorted(
        {
            r["owner_uid"]
            for r in rows
            if r["owner_uid"] is not None and r["owner_uid"] not in in_batch
        }
    )
    if conn.dialect.name == "sqlite":
        found = existing_uids(conn, owners)
    else:
        found = {uid for uid in owners if _OWNER_EXISTS.fetch(conn, {"uid": uid})}
    for row in rows:
        owner = row["owner_uid"]
        if owner is not None and owner not in in_batch and owner not in found:
            raise NotFound(
                row["kind"],
                row["name"],
                uid=owner,
                detail=f'owner_uid "{owner}" names no stored object',
            )


def _raise_create_clash(conn: Connection, rows: Sequence[Row]) -> None:
    """Find which row clashed with a stored object and raise AlreadyExists naming it.

    Runs after a failed insert, when rows before the failing one may already be in the
    transaction: a clash is a name or key held by an object with another uid.
    """
    by_kind: dict[str, list[Row]] = {}
    for row in rows:
        by_kind.setdefault(row["kind"], []).append(row)
    for kind, kind_rows in by_kind.items():
        for chunk in _chunks(kind_rows):
            names = select(objects.c.name, objects.c.uid).where(
                objects.c.kind == kind, objects.c.name.in_([r["name"] for r in chunk])
            )
            name_owner: dict[str, str] = dict(conn.execute(names).all())
            keys = [r["unique_key"] for r in chunk if r["unique_key"] is not None]
            key_query = select(objects.c.unique_key, objects.c.uid).where(
                objects.c.kind == kind, objects.c.unique_key.in_(keys)
            )
            key_owner: dict[str, str] = dict(conn.execute(key_query).all())
            uid_query = select(objects.c.uid).where(objects.c.uid.in_([r["uid"] for r in chunk]))
            taken = set(conn.execute(uid_query).scalars())
            for row in chunk:
                if name_owner.get(row["name"], row["uid"]) != row["uid"]:
                    raise AlreadyExists(kind, row["name"])
                key = row["unique_key"]
                if key is not None and key_owner.get(key, row["uid"]) != row["uid"]:
                    raise AlreadyExists(kind, row["name"], field="unique_key", value=key)
                if row["uid"] in taken and name_owner.get(row["name"]) != row["uid"]:
                    # Only a kept uid can clash (a fresh one is random).
                    raise AlreadyExists(kind, row["name"], field="uid", value=row["uid"])


def create_rows(
    conn: Connection,
    rows: Sequence[Row],
    labels: Sequence[Mapping[str, str]],
    now: int,
    first: int | None = None,
) -> list[Row]:
    """Insert validated new rows (uids set) with their labels and ADDED events.

    The caller has checked the batch for internal duplicates. ``first`` is the first of the
    revisions the caller reserved for them (one reservation per transaction), else they are
    reserved here. Returns the stored rows.
    """
    if not rows:
        return []
    _check_owner_order(rows)
    if first is None:
        first = _allocate(conn, len(rows))
    stored = [
        {
            **row,
            "resource_version": first + index,
            "generation": 1,
            "created_at": now,
            "updated_at": now,
        }
        for index, row in enumerate(rows)
    ]
    try:
        bulk_insert(conn, objects, _INSERT_OBJECT, stored)
    except conn.dialect.loaded_dbapi.IntegrityError:
        _raise_missing_owner(conn, stored)
        _raise_create_clash(conn, stored)
        raise
    label_rows = list(
        itertools.chain.from_iterable(
            _label_rows(row, row_labels) for row, row_labels in zip(stored, labels, strict=True)
        )
    )
    bulk_insert(conn, object_labels, _INSERT_LABEL, label_rows)
    if not _events_by_database(conn):
        bulk_insert(conn, events, _INSERT_EVENT, [_event(row, EventType.ADDED) for row in stored])
    return stored


# ---- update ---------------------------------------------------------------------------------


def _current_rows(
    conn: Connection, requests: Sequence[UpdateRequest]
) -> dict[tuple[str, str], Row]:
    if len(requests) == 1:
        request = requests[0]
        row = get_row(conn, request.kind, request.name)
        return {} if row is None else {(request.kind, request.name): row}
    if conn.dialect.name == "sqlite":
        rows = objects_named(conn, [(r.kind, r.name) for r in requests])
        return {(row["kind"], row["name"]): row for row in rows}
    by_kind: dict[str, list[str]] = {}
    for request in requests:
        by_kind.setdefault(request.kind, []).append(request.name)
    found: dict[tuple[str, str], Row] = {}
    for kind, names in by_kind.items():
        for chunk in _chunks(names):
            for row in _rows_named(conn, kind, chunk):
                found[(kind, row["name"])] = row
    return found


def _check_request(request: UpdateRequest, row: Row | None) -> Row:
    if row is None:
        raise NotFound(request.kind, request.name)
    if request.uid and request.uid != row["uid"]:
        raise Conflict(
            request.kind,
            request.name,
            actual=row["resource_version"],
            expected=request.expected_version,
            detail=f' and uid "{row["uid"]}", not "{request.uid}" (deleted and re-created)',
        )
    if row["resource_version"] != request.expected_version:
        raise Conflict(
            request.kind,
            request.name,
            actual=row["resource_version"],
            expected=request.expected_version,
        )
    return row


def _check_immutable(request: UpdateRequest, row: Row) -> None:
    for field in ("owner_uid", "unique_key"):
        if getattr(request, field) != row[field]:
            raise InvalidObject(
                request.kind,
                request.name,
                field,
                f"cannot change from {row[field]!r} to {getattr(request, field)!r}",
            )


def _changed_row(request: UpdateRequest, row: Row) -> Row | None:
    """The row after the write, or None when the write changes nothing."""
    labels = row["labels"] if request.labels is None else request.labels
    spec = row["spec"] if request.spec is None else request.spec
    status = row["status"] if request.status is None else request.status
    if labels == row["labels"] and spec == row["spec"] and status == row["status"]:
        return None
    generation = row["generation"] + (1 if spec != row["spec"] else 0)
    return {**row, "labels": labels, "spec": spec, "status": status, "generation": generation}


@dataclass(slots=True)
class _Planned:
    """Update requests checked against the stored rows: the rows as they will be, and the
    changes (index, stored row, new row) that need a revision each."""

    result: list[Row]
    changes: list[tuple[int, Row, Row]]


def _plan_updates(
    requests: Sequence[UpdateRequest], current: Mapping[tuple[str, str], Row]
) -> _Planned:
    changes: list[tuple[int, Row, Row]] = []
    result: list[Row] = []
    for index, request in enumerate(requests):
        row = _check_request(request, current.get((request.kind, request.name)))
        if request.spec is not None:
            _check_immutable(request, row)
        changed = _changed_row(request, row)
        result.append(row)
        if changed is not None:
            changes.append((index, row, changed))
    return _Planned(result, changes)


def update_rows(
    conn: Connection,
    requests: Sequence[UpdateRequest],
    new_labels: Sequence[Mapping[str, str] | None],
    now: int,
) -> list[Row]:
    """Compare-and-set every request, all or none; return the stored rows in request order.

    ``new_labels[i]`` is the decoded labels of request ``i`` for spec writes (None for status
    writes). Requests that change nothing take no revision and return the stored row.
    """
    planned = _plan_updates(requests, _current_rows(conn, requests))
    if planned.changes:
        first = _allocate(conn, len(planned.changes))
        _apply_updates(conn, planned, new_labels, now, first)
    return planned.result


def _apply_updates(
    conn: Connection,
    planned: _Planned,
    new_labels: Sequence[Mapping[str, str] | None],
    now: int,
    first: int,
) -> None:
    """Write the planned changes, taking revisions from ``first`` on."""
    changes = planned.changes
    result = planned.result
    params: list[Row] = []
    written: list[Row] = []
    for offset, (index, old, changed) in enumerate(changes):
        changed["resource_version"] = first + offset
        changed["updated_at"] = now
        result[index] = changed
        written.append(changed)
        params.append({**changed, "b_uid": old["uid"], "b_expected": old["resource_version"]})
    updated = bulk_update_objects(conn, _UPDATE_OBJECT, params)
    if updated != len(params):  # pragma: no cover - the write lock makes this unreachable
        raise RuntimeError(f"compare-and-set updated {updated} of {len(params)} rows")
    relabel: list[tuple[Row, Mapping[str, str]]] = []
    for index, old, row in changes:
        labels = new_labels[index]
        if labels is not None and row["labels"] != old["labels"]:
            relabel.append((row, labels))
    if relabel:
        _DELETE_LABELS.run(conn, [{"b_uid": row["uid"]} for row, _ in relabel])
        label_rows = [lr for row, labels in relabel for lr in _label_rows(row, labels)]
        bulk_insert(conn, object_labels, _INSERT_LABEL, label_rows)
    if not _events_by_database(conn):
        modified = [_event(row, EventType.MODIFIED) for row in written]
        bulk_insert(conn, events, _INSERT_EVENT, modified)


def apply_row(conn: Connection, row: Row, labels: Mapping[str, str], now: int) -> Row:
    """Create ``row`` or set the stored object's spec and labels to the row's."""
    existing = get_row(conn, row["kind"], row["name"])
    if existing is None:
        return create_rows(conn, [row], [labels], now)[0]
    request = UpdateRequest(
        kind=row["kind"],
        name=row["name"],
        uid="",
        expected_version=existing["resource_version"],
        owner_uid=row["owner_uid"],
        unique_key=row["unique_key"],
        labels=row["labels"],
        spec=row["spec"],
    )
    return update_rows(conn, [request], [labels], now)[0]


# ---- delete ---------------------------------------------------------------------------------


def _tree(conn: Connection, root_uid: str) -> list[Row]:
    """The root and everything it owns, transitively, deepest first."""
    tree = (
        select(objects.c.uid, literal(0).label("depth"))
        .where(objects.c.uid == root_uid)
        .cte("tree", recursive=True)
    )
    tree = tree.union_all(
        select(objects.c.uid, (tree.c.depth + 1).label("depth")).join(
            tree, objects.c.owner_uid == tree.c.uid
        )
    )
    query = (
        select(objects, tree.c.depth)
        .join(tree, objects.c.uid == tree.c.uid)
        .order_by(tree.c.depth.desc(), objects.c.kind, objects.c.name)
    )
    rows: list[Row] = []
    for found in conn.execute(query).mappings():
        row = dict(found)
        del row["depth"]
        rows.append(row)
    return rows


def delete_tree(conn: Connection, kind: str, name: str, expected_version: int | None) -> list[Row]:
    """Delete an object and all it owns; return the DELETED event rows, root last."""
    root = get_row(conn, kind, name)
    if root is None:
        raise NotFound(kind, name)
    if expected_version is not None and root["resource_version"] != expected_version:
        raise Conflict(kind, name, actual=root["resource_version"], expected=expected_version)
    rows = _tree(conn, root["uid"])
    first = _allocate(conn, len(rows))
    gone = [{**row, "resource_version": first + index} for index, row in enumerate(rows)]
    # Deepest first, so no statement removes an owner before the objects it owns.
    for chunk in _chunks([row["uid"] for row in gone]):
        conn.execute(delete(objects).where(objects.c.uid.in_(chunk)))
    bulk_insert(conn, events, _INSERT_EVENT, [_event(row, EventType.DELETED) for row in gone])
    return gone


# ---- batches --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchRows:
    """A validated :class:`~cronloop.store.model.Batch`, ready for :func:`commit_batch`."""

    creates: Sequence[Row]
    create_labels: Sequence[Mapping[str, str]]
    updates: Sequence[UpdateRequest]
    update_labels: Sequence[Mapping[str, str] | None]
    status_updates: Sequence[UpdateRequest]
    deletes: Sequence[tuple[str, str]]

    def __reduce__(self) -> tuple[type[BatchRows], tuple[Any, ...]]:
        # Pickled as its fields: a slotted dataclass's default state calls
        # dataclasses.fields() per object, and one crosses to the writer process per commit.
        return (
            BatchRows,
            (
                self.creates,
                self.create_labels,
                self.updates,
                self.update_labels,
                self.status_updates,
                self.deletes,
            ),
        )


def commit_batch(
    conn: Connection, batch: BatchRows, now: int
) -> tuple[list[Row], list[Row], list[Row], list[Row]]:
    """Run every write of ``batch`` in this transaction: creates, updates, status updates,
    deletes. Returns the stored rows of each group (deleted rows as DELETED events)."""
    requests = [*batch.updates, *batch.status_updates]
    current = _current_rows(conn, requests) if requests else {}
    spec_plan = _plan_updates(batch.updates, current)
    status_plan = _plan_updates(batch.status_updates, current)
    # One reservation of revisions for the whole batch: each statement costs the writer a
    # hand-back of the GIL (see _bulk).
    count = len(batch.creates) + len(spec_plan.changes) + len(status_plan.changes)
    first = _allocate(conn, count) if count else 0
    created = create_rows(conn, batch.creates, batch.create_labels, now, first)
    first += len(batch.creates)
    if spec_plan.changes:
        _apply_updates(conn, spec_plan, batch.update_labels, now, first)
        first += len(spec_plan.changes)
    if status_plan.changes:
        _apply_updates(conn, status_plan, [None] * len(batch.status_updates), now, first)
    updated, status_updated = spec_plan.result, status_plan.result
    deleted: list[Row] = []
    for kind, name in batch.deletes:
        try:
            deleted.extend(delete_tree(conn, kind, name, None))
        except NotFound:  # already gone: nothing was written for it
            continue
    return created, updated, status_updated, deleted


# ---- writes as data ---------------------------------------------------------------------------

#: What a :class:`BatchWrite` answers: the revisions of the objects it created (everything
#: else about them the caller sent, or is fixed: generation 1, both times the write's
#: ``now``), then the stored rows of its updates and status updates, and the deleted rows.
#: Only revisions for creates because an answer crosses the pipe from the writer process at
#: every commit, and a created row's JSON texts are the caller's own: sent back, they were
#: pickled, read and dropped (two of a scheduled run's three rows are creates).
BatchOutcome = tuple[list[int], list[Row], list[Row], list[Row]]


def _outcome(rows: tuple[list[Row], list[Row], list[Row], list[Row]]) -> BatchOutcome:
    created, updated, status_updated, deleted = rows
    return [row["resource_version"] for row in created], updated, status_updated, deleted


#
# Each write a store makes is one of these small frozen dataclasses, called with the writer's
# connection: plain data, so that the writer can run it on a thread of this process or in a
# process of its own (``_writer_process``), and combine several into one batch. ``now`` is
# the commit time (microseconds since the epoch), taken when the write is submitted.


@dataclass(frozen=True, slots=True)
class BatchWrite:
    """A :class:`BatchRows` to commit: on its own, or together with other batches queued with
    it as one batch (one set of statements for all of them, see ``_writer``)."""

    rows: BatchRows
    now: int

    def __reduce__(self) -> tuple[type[BatchWrite], tuple[BatchRows, int]]:
        return (BatchWrite, (self.rows, self.now))  # see BatchRows.__reduce__

    def __call__(self, conn: Connection) -> BatchOutcome:
        return _outcome(commit_batch(conn, self.rows, self.now))

    def touches(self) -> frozenset[tuple[str, str]] | None:
        """The objects it writes, or None if it cannot run together with others (deletes
        return rows that are not told apart afterwards)."""
        rows = self.rows
        if rows.deletes:
            return None
        return frozenset(
            [(r["kind"], r["name"]) for r in rows.creates]
            + [(r.kind, r.name) for r in (*rows.updates, *rows.status_updates)]
        )

    def together(self, conn: Connection, others: Sequence[BatchWrite]) -> list[BatchOutcome]:
        """Run this write and ``others`` as one batch (they touch disjoint objects and have no
        deletes); return each one's result, as if each had run on its own."""
        writes = [self, *others]
        merged = BatchRows(
            creates=[r for w in writes for r in w.rows.creates],
            create_labels=[lab for w in writes for lab in w.rows.create_labels],
            updates=[r for w in writes for r in w.rows.updates],
            update_labels=[lab for w in writes for lab in w.rows.update_labels],
            status_updates=[r for w in writes for r in w.rows.status_updates],
            deletes=(),
        )
        created, updated, status_updated, _ = _outcome(commit_batch(conn, merged, self.now))
        results: list[BatchOutcome] = []
        c = u = st = 0
        for w in writes:
            rows = w.rows
            results.append(
                (
                    created[c : c + len(rows.creates)],
                    updated[u : u + len(rows.updates)],
                    status_updated[st : st + len(rows.status_updates)],
                    [],
                )
            )
            c += len(rows.creates)
            u += len(rows.updates)
            st += len(rows.status_updates)
        return results


@dataclass(frozen=True, slots=True)
class ApplyWrite:
    """:func:`apply_row` as a write."""

    row: Row
    labels: Mapping[str, str]
    now: int

    def __call__(self, conn: Connection) -> Row:
        return apply_row(conn, self.row, self.labels, self.now)


@dataclass(frozen=True, slots=True)
class DeleteWrite:
    """:func:`delete_tree` as a write."""

    kind: str
    name: str
    expected_version: int | None

    def __call__(self, conn: Connection) -> list[Row]:
        return delete_tree(conn, self.kind, self.name, self.expected_version)


@dataclass(frozen=True, slots=True)
class CompactWrite:
    """:func:`compact` as a write."""

    before_revision: int

    def __call__(self, conn: Connection) -> int:
        return compact(conn, self.before_revision)


# ---- reads ----------------------------------------------------------------------------------


def list_rows(
    conn: Connection,
    kind: str,
    *,
    labels: Mapping[str, str],
    owner_uid: str | None,
    limit: int | None,
    after: str | None,
) -> list[Row]:
    """Objects of ``kind`` matching the filters, ordered by name."""
    if owner_uid is not None or labels:
        # Without statistics SQLite picks the (kind, name) index and scans every object of
        # the kind: O(objects) per list. ``kind || ''`` cannot use an index, which leaves the
        # owner index or the label-selector index to drive the lookup.
        query = select(objects).where(objects.c.kind.concat("") == kind)
    else:
        query = select(objects).where(objects.c.kind == kind)
    if owner_uid is not None:
        query = query.where(objects.c.owner_uid == owner_uid)
    for key, value in labels.items():
        # An uncorrelated IN drives the lookup from the selector index (kind, key, value) and
        # then fetches the matching objects by uid. The correlated EXISTS it replaces made
        # SQLite scan every object of the kind and probe its labels: O(objects) per list.
        query = query.where(
            objects.c.uid.in_(
                select(object_labels.c.uid).where(
                    and_(
                        object_labels.c.kind == kind,
                        object_labels.c.key == key,
                        object_labels.c.value == value,
                    )
                )
            )
        )
    if after is not None:
        query = query.where(objects.c.name > after)
    query = query.order_by(objects.c.name)
    if limit is not None:
        query = query.limit(limit)
    return fetch_all(conn, query)


def events_after(
    conn: Connection, after: int, kinds: Sequence[str] | None, limit: int
) -> tuple[list[Row], int, int]:
    """Up to ``limit`` event rows above revision ``after``, in revision order.

    Returns ``(rows, revision, compacted_before)`` read in one snapshot, so the caller knows
    whether it has seen everything up to ``revision`` and whether ``after`` was compacted.
    """
    revision, compacted_before = read_revision(conn)
    query = select(events).where(events.c.revision > after)
    if kinds is not None:
        query = query.where(events.c.kind.in_(kinds))
    query = query.order_by(events.c.revision).limit(limit)
    rows = fetch_all(conn, query)
    return rows, revision, compacted_before


def compact(conn: Connection, before_revision: int) -> int:
    """Delete events below ``before_revision``; return how many were deleted."""
    revision, compacted_before = read_revision(conn)
    if before_revision > revision + 1:
        raise InvalidObject(
            "",
            "",
            "before_revision",
            f"{before_revision} is above the next revision {revision + 1}",
        )
    if before_revision <= compacted_before:
        return 0
    deleted = conn.execute(delete(events).where(events.c.revision < before_revision)).rowcount
    conn.execute(
        update(store_meta).where(store_meta.c.id == 1).values(compacted_before=before_revision)
    )
    return int(deleted)
