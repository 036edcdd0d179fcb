"""Apply the store's Alembic migrations programmatically (``alembic upgrade head``).

Stores call :func:`upgrade_schema` when they open, inside a write transaction, so concurrent openers
of one fresh database serialise and the second finds the schema already at head.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

__all__ = ["MIGRATIONS_DIR", "head_schema_revision", "schema_revision", "upgrade_schema"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
"""The Alembic script directory shipped inside the package."""


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_schema_revision() -> str:
    """The newest migration shipped with this version of cronloop."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships a migration
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def schema_revision(connection: Connection) -> str | None:
    """The migration the database is at, or None for a database never migrated."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade_schema(connection: Connection) -> bool:
    """Migrate the database behind ``connection`` to head; return whether anything ran.

    Idempotent: a database already at head is left untouched. The caller owns the
    transaction; the migrations run inside it.
    """
    if schema_revision(connection) == head_schema_revision():
        return False
    command.upgrade(_config(connection), "head")
    return True
