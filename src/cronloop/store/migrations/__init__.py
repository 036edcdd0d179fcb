"""Alembic migrations of the SQL store, shipped in the package and applied at open.

Run them through :func:`cronloop.store.migrate.upgrade_schema`; ``env.py`` expects the connection to
be handed over in ``config.attributes["connection"]``.
"""
