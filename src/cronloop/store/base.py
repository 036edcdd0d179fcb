"""The store contract: what every backend (SQLite now, PostgreSQL later) guarantees.

Callers program against :class:`Store` only. The guarantees are those of a small etcd: a
global revision counter, compare-and-set writes keyed on ``resource_version``, atomic batches,
owner cascade on delete, and a change feed that resumes from any revision still in history.
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Self

from cronloop.store.model import Batch, BatchResult, ListResult, StoredObject, WatchEvent

__all__ = ["Store"]


class Store(abc.ABC):
    """Versioned object storage with a change feed.

    **Revisions.** The store keeps one global revision counter. Every committed change of one
    object (create, update, status update, delete, each object of a cascade) takes the next
    revision, and the object's ``resource_version`` is the revision of its last write. A batch
    takes a contiguous range of revisions and commits all of them or none. Revisions become
    visible in order: once revision N is readable, so is every revision below it.

    **Validation first.** Every write checks its whole input (names, labels, JSON-ability of
    ``spec``/``status``) before touching storage, and raises
    :class:`~cronloop.store.errors.InvalidObject` naming the object and the field.

    **Errors.** :class:`~cronloop.store.errors.NotFound`,
    :class:`~cronloop.store.errors.AlreadyExists`, :class:`~cronloop.store.errors.Conflict`,
    :class:`~cronloop.store.errors.Expired`, :class:`~cronloop.store.errors.StoreClosed`; a
    failed write leaves storage exactly as it was.

    **Shared values.** The ``spec``, ``status`` and ``labels`` a write is given may be shared,
    not copied, with the objects it returns and the events its watchers receive (decoding
    them again would only make equal copies). Treat them as immutable once written, like
    every :class:`~cronloop.store.model.StoredObject`.

    **Concurrency.** Methods may be called concurrently from tasks of the event loop the store
    was opened on. Several stores (several processes) may share one database; their writes
    serialise in the database, and each store's watchers see the others' writes too.

    A store is an async context manager that closes itself on exit.
    """

    # ---- writes ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def create(self, obj: StoredObject) -> StoredObject:
        """Create ``obj`` and return it as stored.

        The store assigns a fresh ``uid``, ``generation`` 1, ``resource_version`` (the new
        revision) and both timestamps; the values of those fields in ``obj`` are ignored.
        ``spec``, ``status``, ``labels``, ``owner_uid`` and ``unique_key`` are stored as given.

        :raises AlreadyExists: ``(kind, name)`` exists, or another object of the kind has the
            same ``unique_key`` (so one scheduled run can never be created twice).
        :raises NotFound: ``owner_uid`` names no stored object.
        :raises InvalidObject: the object is malformed; nothing was written.
        """

    @abc.abstractmethod
    async def create_many(
        self, objs: Sequence[StoredObject], *, keep_uids: bool = False
    ) -> builtins.list[StoredObject]:
        """Create every object of ``objs`` in one transaction: all of them or none.

        Objects take consecutive revisions in the order given. Returns the stored objects in
        the same order. An empty batch writes nothing.

        Owners must be stored already, unless ``keep_uids``: then every object keeps the
        ``uid`` it carries (a fresh one from :func:`~cronloop.store.model.new_uid`), so a
        batch can hold an owner and, after it, the objects it owns (a run and its sub-jobs
        created in one transaction).

        :raises AlreadyExists: any object clashes with a stored one or with another object of
            the batch (name, ``unique_key``, or a kept ``uid``); nothing was written.
        :raises NotFound: an ``owner_uid`` names no stored object (nor an earlier object of
            the batch); nothing was written.
        :raises InvalidObject: any object is malformed (with ``keep_uids``: a missing or
            malformed uid, or an owner placed after what it owns); nothing was written.
        """

    @abc.abstractmethod
    async def update(
        self, obj: StoredObject, *, expected_version: int | None = None
    ) -> StoredObject:
        """Replace the ``spec`` and ``labels`` of ``obj.kind``/``obj.name`` (compare-and-set).

        ``expected_version`` defaults to ``obj.resource_version``: the write applies only if
        the stored object is still at that version (there is no unconditional update). The
        ``status`` of ``obj`` is ignored (use :meth:`update_status`); ``owner_uid`` and
        ``unique_key`` cannot change. ``generation`` grows by one if the spec changed. A write
        that changes nothing takes no revision and returns the stored object.

        :raises NotFound: the object does not exist.
        :raises Conflict: the stored version differs from ``expected_version``, or ``obj.uid``
            is set and differs from the stored uid (the object was deleted and re-created).
        :raises InvalidObject: malformed input, or an attempt to change an immutable field.
        """

    @abc.abstractmethod
    async def update_status(
        self, obj: StoredObject, *, expected_version: int | None = None
    ) -> StoredObject:
        """Replace the ``status`` of ``obj.kind``/``obj.name`` (compare-and-set).

        Same preconditions as :meth:`update`; only ``status`` is written and ``generation``
        does not change. A write that changes nothing takes no revision.
        """

    @abc.abstractmethod
    async def update_many(
        self, objs: Sequence[StoredObject], *, status: bool = False
    ) -> builtins.list[StoredObject]:
        """Compare-and-set many objects in one transaction: all of them or none.

        Each object's expected version is its own ``resource_version``. With ``status=False``
        each write is an :meth:`update`, with ``status=True`` an :meth:`update_status`. An
        object may appear once per batch. Returns the stored objects in the same order.

        :raises Conflict: any object is stale; the message names it and nothing was written.
        :raises NotFound: any object does not exist; nothing was written.
        """

    @abc.abstractmethod
    async def commit(self, batch: Batch) -> BatchResult:
        """Write every part of ``batch`` in one transaction: all of it or none.

        Creates, spec updates, status updates and deletes run in that order (see
        :class:`~cronloop.store.model.Batch`), each with the guarantees of its single-object
        method; revisions are consecutive across the whole batch. This is how a controller
        records a decision that touches several objects at once (a scheduled run with its
        sub-jobs and the CronJob's new cursor; many sub-jobs and their jobs) atomically and in
        one commit. An empty batch writes nothing.

        :raises AlreadyExists: a create clashed; nothing was written.
        :raises Conflict: an update is stale; nothing was written.
        :raises NotFound: an update names no object, or an owner is missing; nothing was
            written. (A delete of a missing object is skipped instead.)
        :raises InvalidObject: an object is malformed or appears twice; nothing was written.
        """

    @abc.abstractmethod
    async def apply(self, obj: StoredObject) -> StoredObject:
        """Create ``obj``, or make the stored object's ``spec`` and ``labels`` equal to it.

        Declarative "create or update spec" without a version precondition; the read and the
        write are one transaction, so a concurrent writer cannot slip in between. The stored
        ``status`` is kept. Returns the stored object (unchanged when nothing differed).

        :raises AlreadyExists: a create clashed on ``unique_key``.
        :raises InvalidObject: malformed input, or ``owner_uid``/``unique_key`` differ from
            the stored object's.
        """

    @abc.abstractmethod
    async def delete(
        self, kind: str, name: str, *, expected_version: int | None = None
    ) -> StoredObject:
        """Delete an object and, in the same transaction, everything it owns, transitively.

        Each deleted object takes its own revision and produces a ``DELETED`` event; owned
        objects are deleted before their owners. Returns the deleted object with
        ``resource_version`` set to its deletion revision.

        :raises NotFound: the object does not exist.
        :raises Conflict: ``expected_version`` is given and differs from the stored version.
        """

    # ---- reads ----------------------------------------------------------------------------

    @abc.abstractmethod
    async def get(self, kind: str, name: str) -> StoredObject:
        """Return the object named ``name`` of ``kind``.

        :raises NotFound: no such object.
        """

    @abc.abstractmethod
    async def get_by_uid(self, uid: str) -> StoredObject:
        """Return the object whose uid is ``uid``.

        :raises NotFound: no such object.
        """

    @abc.abstractmethod
    async def list(
        self,
        kind: str,
        *,
        labels: Mapping[str, str] | None = None,
        owner_uid: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> ListResult:
        """Return the objects of ``kind`` ordered by name, and the revision they were read at.

        ``labels`` keeps objects that have every given label with the given value;
        ``owner_uid`` keeps objects owned by that uid; ``limit`` caps the count and ``after``
        starts after that name (for paging). The items and the revision come from one
        consistent snapshot, so ``watch(from_revision=result.revision)`` neither misses nor
        repeats a change. (Each page of a paged list is its own snapshot.)
        """

    @abc.abstractmethod
    async def current_revision(self) -> int:
        """Return the revision of the last committed write (0 for an empty store)."""

    # ---- change feed ----------------------------------------------------------------------

    @abc.abstractmethod
    def watch(
        self, *, kinds: Iterable[str] | None = None, from_revision: int | None = None
    ) -> AsyncIterator[WatchEvent]:
        """Yield every change with a revision above ``from_revision``, in revision order.

        ``from_revision=None`` means the revision current when iteration starts (the feed is
        lazy); to start from a known point, use the revision returned by :meth:`list`.
        ``kinds`` restricts the feed to those kinds. Delivery has no gaps and no duplicates,
        and it is live: a write through this store wakes its watchers right after commit,
        and writes by other processes are picked up by polling. The iterator never ends on
        its own; close it (or cancel its task) to stop.

        :raises Expired: the history after ``from_revision`` was compacted (also raised
            mid-stream if a slow watcher falls behind a compaction).
        :raises StoreClosed: the store was closed.
        """

    @abc.abstractmethod
    async def compact(self, before_revision: int) -> int:
        """Discard change history below ``before_revision`` and return how many events went.

        Watching from any revision ``>= before_revision - 1`` keeps working; watching from an
        older one raises :class:`~cronloop.store.errors.Expired`. Objects are not affected.
        Compacting to an older point than an earlier compaction is a no-op.

        :raises InvalidObject: ``before_revision`` is above ``current_revision() + 1``.
        """

    # ---- lifecycle ------------------------------------------------------------------------

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and threads; pending watchers raise ``StoreClosed``.

        Idempotent. Writes already committed stay committed.
        """

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
