"""Alembic revision scripts of the SQL store, oldest first (Alembic skips this file)."""
