"""``open_store(url)``: pick and open the backend a URL names.

Only ``sqlite`` exists today; a ``postgresql`` URL gets a clear error until its backend lands,
so callers already pass URLs and will not change when it does.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

from cronloop.store.base import Store
from cronloop.store.errors import InvalidObject
from cronloop.store.sqlite import SQLiteStore

__all__ = ["open_store"]


async def open_store(url: str | os.PathLike[str], **options: Any) -> Store:
    """Open the store at ``url`` and migrate its schema to head.

    ``url`` is a SQLAlchemy-style URL (``sqlite:///relative.db``, ``sqlite:////abs/path.db``)
    or a plain file path (SQLite). ``options`` go to the backend (see :class:`SQLiteStore`).
    Use the result as ``async with await open_store(url) as store:`` or close it yourself.
    """
    text = os.fspath(url)
    if "://" not in text:
        return await SQLiteStore.open(text, **options)
    try:
        parsed = make_url(text)
    except ArgumentError as exc:
        raise InvalidObject("", "", "url", f"is not a database URL: {exc}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise InvalidObject(
                "", "", "url", "needs a database file: watchers and migrations need a shared file"
            )
        return await SQLiteStore.open(parsed.database, **options)
    raise InvalidObject("", "", "url", f"has no store backend for {backend!r} (supported: sqlite)")
