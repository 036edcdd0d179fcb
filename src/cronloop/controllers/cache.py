"""An informer-style cache of the objects the controllers reconcile, and the store view on it.

Why: a reconcile used to read its object and the objects it owns from the store, a thread hop
and a read transaction each (about 180 us on 2 cores); with thousands of runs due at once
those reads were most of the cost of firing a run. Like client-go's informers, the manager
fills :class:`ObjectCache` from the store's change feed (list, then watch) and controllers
read from memory through :class:`CachedStore`. Controllers still write to the store, and the
view records what each write returned (a write-through, like client-go's mutation cache), so a
controller always reads its own writes even before the feed delivers them.

Ordering: every entry carries its resource version and a newer object is never replaced by an
older one; a deletion leaves a tombstone until the feed has passed its revision, so a late
event cannot resurrect the object.

Staleness is harmless by construction: every write is a compare-and-set on the version read,
so a write based on a stale read fails with ``Conflict``; the view then reads the objects
involved from the store into the cache before raising, and the caller retries.

Hand-written: no library offers a versioned cache of this store's objects.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence

from cronloop.store import (
    Batch,
    BatchResult,
    Conflict,
    ListResult,
    NotFound,
    Store,
    StoredObject,
)

__all__ = ["CachedStore", "ObjectCache"]

#: Tombstones are pruned once there are this many (only those the feed has passed).
_TOMBSTONE_PRUNE_AT = 4096


class ObjectCache:
    """The latest known version of every object of some kinds, indexed by owner.

    Not thread-safe: it lives on the event loop, like the controllers that read it.
    """

    def __init__(self, kinds: Iterable[str]) -> None:
        self._objects: dict[str, dict[str, StoredObject]] = {kind: {} for kind in kinds}
        #: (kind, owner uid) -> names, in insertion order.
        self._owned: dict[tuple[str, str], dict[str, None]] = {}
        self._tombstones: dict[tuple[str, str], int] = {}
        self._fed_to = 0
        self._synced: set[str] = set()

    def synced(self, kind: str) -> bool:
        """Whether a full listing of ``kind`` has been loaded (so a miss means "absent")."""
        return kind in self._synced

    # ---- reads ------------------------------------------------------------------------------

    def get(self, kind: str, name: str) -> StoredObject | None:
        objects = self._objects.get(kind)
        return None if objects is None else objects.get(name)

    def owned(self, kind: str, owner_uid: str) -> builtins.list[StoredObject]:
        """The objects of ``kind`` owned by ``owner_uid``, ordered by name like a store list."""
        names = self._owned.get((kind, owner_uid))
        if not names:
            return []
        objects = self._objects[kind]
        return [objects[name] for name in sorted(names)]

    def objects(self, kind: str) -> builtins.list[StoredObject]:
        return list(self._objects.get(kind, {}).values())

    # ---- writes -----------------------------------------------------------------------------

    def observe(self, obj: StoredObject) -> bool:
        """Record ``obj`` unless what is cached is as new or newer; returns whether it was."""
        objects = self._objects.get(obj.kind)
        if objects is None:
            return False
        version = obj.resource_version
        tombstone = self._tombstones.get((obj.kind, obj.name))
        if tombstone is not None and tombstone >= version:
            return False
        current = objects.get(obj.name)
        if current is not None:
            if current.resource_version >= version:
                return False
            if current.owner_uid != obj.owner_uid:
                self._unindex(current)
        objects[obj.name] = obj
        if obj.owner_uid is not None:
            self._owned.setdefault((obj.kind, obj.owner_uid), {})[obj.name] = None
        return True

    def forget(self, obj: StoredObject) -> None:
        """Record the deletion of ``obj`` (its ``resource_version`` is the deletion's)."""
        if obj.kind not in self._objects:
            return
        key = (obj.kind, obj.name)
        version = obj.resource_version
        self._tombstones[key] = max(version, self._tombstones.get(key, 0))
        current = self._objects[obj.kind].get(obj.name)
        if current is not None and current.resource_version <= version:
            del self._objects[obj.kind][obj.name]
            self._unindex(current)
        if len(self._tombstones) >= _TOMBSTONE_PRUNE_AT:
            self._prune_tombstones()

    def drop(self, kind: str, name: str) -> None:
        """Remove an entry found missing in the store (no tombstone: the feed brings the
        deletion's own revision)."""
        current = self._objects.get(kind, {}).pop(name, None)
        if current is not None:
            self._unindex(current)

    def fed_to(self, revision: int) -> None:
        """The change feed has applied every change up to ``revision``."""
        self._fed_to = max(self._fed_to, revision)

    def replace(self, kind: str, listed: Sequence[StoredObject], revision: int) -> None:
        """Load a full listing of ``kind`` read at ``revision``.

        Objects the listing lacks are dropped unless written after ``revision`` (a newer write
        through this cache that the listing could not contain).
        """
        objects = self._objects[kind]
        names = set()
        for obj in listed:
            names.add(obj.name)
            self.observe(obj)
        for name, current in list(objects.items()):
            if name not in names and current.resource_version <= revision:
                del objects[name]
                self._unindex(current)
        self._synced.add(kind)

    # ---- internals --------------------------------------------------------------------------

    def _unindex(self, obj: StoredObject) -> None:
        if obj.owner_uid is None:
            return
        key = (obj.kind, obj.owner_uid)
        names = self._owned.get(key)
        if names is not None:
            names.pop(obj.name, None)
            if not names:
                del self._owned[key]

    def _prune_tombstones(self) -> None:
        fed = self._fed_to
        self._tombstones = {k: v for k, v in self._tombstones.items() if v > fed}


class CachedStore:
    """The store as the controllers use it: reads from an :class:`ObjectCache`, writes through.

    A read the cache cannot answer (a kind it does not hold, a miss before the first listing,
    a label selector) goes to the store.
    """

    def __init__(self, store: Store, cache: ObjectCache) -> None:
        self.store = store
        self.cache = cache

    # ---- reads ------------------------------------------------------------------------------

    async def get(self, kind: str, name: str) -> StoredObject:
        """The cached object, else the stored one (:class:`NotFound` if neither exists)."""
        hit = self.cache.get(kind, name)
        if hit is not None:
            return hit
        obj = await self.store.get(kind, name)
        self.cache.observe(obj)
        return obj

    async def owned(self, kind: str, owner_uid: str) -> builtins.list[StoredObject]:
        """The objects of ``kind`` owned by ``owner_uid``, ordered by name."""
        if self.cache.synced(kind):
            return self.cache.owned(kind, owner_uid)
        listed = (await self.store.list(kind, owner_uid=owner_uid)).items
        for obj in listed:
            self.cache.observe(obj)
        return listed

    async def list(self, kind: str, *, labels: Mapping[str, str] | None = None) -> ListResult:
        """A listing straight from the store (for the rare reads the cache has no index for)."""
        return await self.store.list(kind, labels=labels)

    # ---- writes -----------------------------------------------------------------------------

    async def create(self, obj: StoredObject) -> StoredObject:
        stored = await self.store.create(obj)
        self.cache.observe(stored)
        return stored

    async def create_many(
        self, objs: Sequence[StoredObject], *, keep_uids: bool = False
    ) -> builtins.list[StoredObject]:
        stored = await self.store.create_many(objs, keep_uids=keep_uids)
        for obj in stored:
            self.cache.observe(obj)
        return stored

    async def update(self, obj: StoredObject) -> StoredObject:
        try:
            stored = await self.store.update(obj)
        except (Conflict, NotFound):
            await self._refresh([obj])
            raise
        self.cache.observe(stored)
        return stored

    async def update_status(self, obj: StoredObject) -> StoredObject:
        try:
            stored = await self.store.update_status(obj)
        except (Conflict, NotFound):
            await self._refresh([obj])
            raise
        self.cache.observe(stored)
        return stored

    async def commit(self, batch: Batch) -> BatchResult:
        try:
            result = await self.store.commit(batch)
        except (Conflict, NotFound):
            await self._refresh([*batch.updates, *batch.status_updates])
            raise
        for obj in (*result.created, *result.updated, *result.status_updated):
            self.cache.observe(obj)
        for obj in result.deleted:
            self.cache.forget(obj)
        return result

    async def update_many(
        self, objs: Sequence[StoredObject], *, status: bool = False
    ) -> builtins.list[StoredObject]:
        try:
            stored = await self.store.update_many(objs, status=status)
        except (Conflict, NotFound):
            await self._refresh(objs)
            raise
        for obj in stored:
            self.cache.observe(obj)
        return stored

    async def delete(self, kind: str, name: str) -> StoredObject:
        try:
            deleted = await self.store.delete(kind, name)
        except NotFound:
            self.cache.drop(kind, name)
            raise
        self.cache.forget(deleted)
        return deleted

    async def _refresh(self, objs: Sequence[StoredObject]) -> None:
        """Read the objects of a failed compare-and-set again, so the retry sees them."""
        for obj in objs:
            try:
                self.cache.observe(await self.store.get(obj.kind, obj.name))
            except NotFound:
                self.cache.drop(obj.kind, obj.name)
