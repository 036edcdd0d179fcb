"""SQLite writes the change feed's ADDED and MODIFIED rows itself, in the writing statement.

A create or an update used to insert its events with a statement of its own, sending every
object a second time; each statement also costs the writer thread a hand-back of the GIL
from a busy event loop (see ``store/_bulk.py``). These triggers copy the row just written
into ``events`` inside the same statement. Deletions still insert their events explicitly:
a deleted row's event carries the deletion's own revision, which the row does not hold.

Other dialects write the events explicitly (``store/_ops.py`` asks which way).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_COLUMNS = (
    "uid, kind, name, resource_version, generation, owner_uid, unique_key, labels, spec, "
    "status, created_at, updated_at"
)
_NEW = ", ".join(f"NEW.{c.strip()}" for c in _COLUMNS.split(","))


def _trigger(name: str, after: str, event: str) -> str:
    return (
        f"CREATE TRIGGER {name} AFTER {after} ON objects BEGIN "
        f"INSERT INTO events (revision, type, {_COLUMNS}) "
        f"VALUES (NEW.resource_version, '{event}', {_NEW}); END"
    )


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(_trigger("objects_added_event", "INSERT", "ADDED"))
    op.execute(_trigger("objects_modified_event", "UPDATE", "MODIFIED"))


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("DROP TRIGGER objects_modified_event")
    op.execute("DROP TRIGGER objects_added_event")
