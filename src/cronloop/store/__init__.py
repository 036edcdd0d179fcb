"""Persistence for cronloop: versioned objects, compare-and-set writes and a change feed.

:class:`Store` is the contract; :class:`SQLiteStore` the default backend. Objects travel as
the generic :class:`StoredObject` envelope (the store does not import :mod:`cronloop.api`).
See docs/store.md.
"""

from __future__ import annotations

from cronloop.store.base import (
    Store,
)
from cronloop.store.errors import (
    AlreadyExists,
    Conflict,
    Expired,
    InvalidObject,
    NotFound,
    StoreClosed,
    StoreError,
)
from cronloop.store.factory import (
    open_store,
)
from cronloop.store.migrate import (
    MIGRATIONS_DIR,
    head_schema_revision,
    schema_revision,
    upgrade_schema,
)
from cronloop.store.model import (
    MAX_NAME_LENGTH,
    Batch,
    BatchResult,
    EventType,
    JSONObject,
    ListResult,
    StoredObject,
    WatchEvent,
    new_uid,
    validate_identity,
    validate_labels,
)
from cronloop.store.sqlite import (
    SQLiteStore,
    Synchronous,
    Writer,
)

__all__ = [
    "MAX_NAME_LENGTH",
    "MIGRATIONS_DIR",
    "AlreadyExists",
    "Batch",
    "BatchResult",
    "Conflict",
    "EventType",
    "Expired",
    "InvalidObject",
    "JSONObject",
    "ListResult",
    "NotFound",
    "SQLiteStore",
    "Store",
    "StoreClosed",
    "StoreError",
    "StoredObject",
    "Synchronous",
    "WatchEvent",
    "Writer",
    "head_schema_revision",
    "new_uid",
    "open_store",
    "schema_revision",
    "upgrade_schema",
    "validate_identity",
    "validate_labels",
]
