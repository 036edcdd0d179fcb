"""Helpers shared by the store tests: object builders and feed collection with timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from cronloop.store import Store, StoredObject, WatchEvent


def job(name: str, **fields: object) -> StoredObject:
    """A new Job envelope with a small spec unless one is given."""
    fields.setdefault("spec", {"command": ["echo", name]})
    return StoredObject("Job", name, **fields)  # type: ignore[arg-type]


async def collect(
    store: Store,
    *,
    until_revision: int,
    from_revision: int = 0,
    kinds: Iterable[str] | None = None,
    deadline: float = 10.0,
) -> list[WatchEvent]:
    """Watch from ``from_revision`` until an event at ``until_revision`` or later arrives."""
    seen: list[WatchEvent] = []
    if until_revision <= from_revision:
        return seen
    async with asyncio.timeout(deadline):
        async for event in store.watch(kinds=kinds, from_revision=from_revision):
            seen.append(event)
            if event.revision >= until_revision:
                break
    return seen
