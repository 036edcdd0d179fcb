"""Alembic environment of the store: migrate the connection the store hands over.

The store opens its own engine (with its PRAGMAs and transaction handling) and passes a
connection in ``config.attributes["connection"]``; migrating through any other connection
would miss those settings, so a missing connection is an error rather than a fallback.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from cronloop.store._schema import metadata


def _run() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError(
            "cronloop's store migrations run through "
            "cronloop.store.migrate.upgrade_schema(connection)"
        )
    # render_as_batch: SQLite cannot ALTER most things in place; batch mode copies the table.
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


_run()
