"""The relational schema as SQLAlchemy Core tables, shared by the backends and the migrations.

Tables:

- ``store_meta``: one row holding the global ``revision`` and the ``compacted_before`` mark.
- ``objects``: the current state of every object; JSON columns hold orjson-encoded text.
- ``object_labels``: one row per (object, label) so label selectors use an index.
- ``events``: the change feed, one row per revision, holding the full object as written.

Timestamps are integer microseconds since the Unix epoch (UTC): exact, portable, and fast to
compare in SQL on every dialect.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = ["events", "metadata", "object_labels", "objects", "store_meta"]

metadata = MetaData()

store_meta = Table(
    "store_meta",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("revision", BigInteger, nullable=False),
    Column("compacted_before", BigInteger, nullable=False),
    CheckConstraint("id = 1", name="ck_store_meta_single_row"),
)


def _envelope_columns(*, owner_fk: bool) -> list[Column[object]]:
    """The envelope columns, shared by ``objects`` and ``events`` (an event is a snapshot)."""
    # No ON DELETE action on the owner key: the store deletes owned objects itself (each one
    # needs its own DELETED event), and the key makes an orphan impossible if it ever forgot.
    owner = ForeignKey("objects.uid", name="fk_objects_owner_uid") if owner_fk else None
    owner_args = (owner,) if owner is not None else ()
    return [
        Column("kind", String(63), nullable=False),
        Column("name", String(253), nullable=False),
        Column("resource_version", BigInteger, nullable=False),
        Column("generation", BigInteger, nullable=False),
        Column("owner_uid", String(64), *owner_args, nullable=True),
        Column("unique_key", String(512), nullable=True),
        Column("labels", Text, nullable=False),
        Column("spec", Text, nullable=False),
        Column("status", Text, nullable=False),
        Column("created_at", BigInteger, nullable=False),
        Column("updated_at", BigInteger, nullable=False),
    ]


objects = Table(
    "objects",
    metadata,
    Column("uid", String(64), primary_key=True),
    *_envelope_columns(owner_fk=True),
    UniqueConstraint("kind", "name", name="uq_objects_kind_name"),
    UniqueConstraint("kind", "unique_key", name="uq_objects_kind_unique_key"),
    Index("ix_objects_owner_uid", "owner_uid"),
)

object_labels = Table(
    "object_labels",
    metadata,
    Column(
        "uid",
        String(64),
        ForeignKey("objects.uid", name="fk_object_labels_uid", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("key", String(253), primary_key=True),
    Column("value", String(253), nullable=False),
    Column("kind", String(63), nullable=False),
    Index("ix_object_labels_selector", "kind", "key", "value"),
)

events = Table(
    "events",
    metadata,
    # The revision is the key, so the feed is read in revision order straight off the index.
    # (On SQLite, INTEGER PRIMARY KEY makes it the rowid itself: no second index to write.)
    Column(
        "revision",
        BigInteger().with_variant(Integer(), "sqlite"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("type", String(8), nullable=False),
    Column("uid", String(64), nullable=False),
    *_envelope_columns(owner_fk=False),
    Index("ix_events_kind_revision", "kind", "revision"),
)
