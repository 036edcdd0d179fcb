"""The change feed over HTTP: ``GET /apis/cronloop.dev/v1/watch`` as NDJSON.

One JSON object per line: ``{"type": "ADDED|MODIFIED|DELETED", "revision": N, "object": {...}}``
with the object shown as the resource endpoints show it (env values masked). Start from the
``resourceVersion`` of a list response to miss nothing and repeat nothing.

A start revision older than the compacted history answers 410 Gone. The store reports that on
its first read, which happens as iteration starts, so the endpoint waits (at most
:data:`EXPIRY_CHECK_SECONDS`) for the first event or error before it sends the status line.
If history is compacted under a watcher that fell behind later on, the stream ends with a
line ``{"type": "ERROR", "code": 410, "error": "..."}`` (as a Kubernetes watch does).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Query

from cronloop.api import KINDS
from cronloop.controllers.subjobs import watched_kinds, with_embedded_subjobs
from cronloop.server._context import ServerContext
from cronloop.server._errors import ApiError
from cronloop.server._present import present_stored
from cronloop.server._streaming import ClosingStream
from cronloop.store import Expired, WatchEvent

__all__ = ["EXPIRY_CHECK_SECONDS", "event_line", "parse_kinds", "watch_router"]

#: How long the endpoint waits for the feed's first answer before it starts streaming.
EXPIRY_CHECK_SECONDS = 0.25


def parse_kinds(text: str | None) -> list[str]:
    """``"Job,SubJob"`` as a list of kinds (every kind when empty); 422 names an unknown one."""
    if not text:
        return list(KINDS)
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    for kind in kinds:
        if kind not in KINDS:
            raise ApiError(
                422, f"kinds: unknown kind {kind!r} (expected some of {', '.join(KINDS)})"
            )
    return kinds


def event_line(event: WatchEvent) -> bytes:
    """One NDJSON line for ``event``."""
    data: dict[str, Any] = {
        "type": event.type.value,
        "revision": event.revision,
        "object": present_stored(event.object),
    }
    return orjson.dumps(data) + b"\n"


def _error_line(exc: Expired) -> bytes:
    return orjson.dumps({"type": "ERROR", "code": 410, "error": str(exc)}) + b"\n"


class _Feed:
    """A store watch whose first event is awaited ahead of the response (see the docstring)."""

    def __init__(self, events: AsyncIterator[WatchEvent]) -> None:
        self._events = events
        self.first: asyncio.Task[WatchEvent] = asyncio.create_task(self._next())

    async def _next(self) -> WatchEvent:
        return await anext(self._events)

    async def lines(self) -> AsyncGenerator[bytes, None]:
        try:
            yield event_line(await self.first)
            async for event in self._events:
                yield event_line(event)
        except Expired as exc:
            yield _error_line(exc)
        except StopAsyncIteration:  # the store was closed under the first read
            return

    async def close(self) -> None:
        self.first.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.first
        aclose = getattr(self._events, "aclose", None)
        if aclose is not None:
            await aclose()


def watch_router(ctx: ServerContext) -> APIRouter:
    """The watch route over ``ctx.store``."""
    router = APIRouter()

    @router.get("/apis/cronloop.dev/v1/watch")
    async def watch(
        kinds: str | None = None,
        from_revision: int | None = Query(None, alias="from", ge=0),
    ) -> ClosingStream:
        """Every change of the given kinds after revision ``from`` (now, when not given)."""
        chosen = parse_kinds(kinds)
        # A one-target run keeps its sub-job: its changes are shown as the SubJob's too.
        events = ctx.store.watch(kinds=watched_kinds(chosen), from_revision=from_revision)
        feed = _Feed(aiter(with_embedded_subjobs(aiter(events), chosen)))
        try:
            await asyncio.wait({feed.first}, timeout=EXPIRY_CHECK_SECONDS)
        except BaseException:  # cancelled (client gone, server stopping): stop the feed too
            await feed.close()
            raise
        if feed.first.done() and not feed.first.cancelled():
            error = feed.first.exception()
            if error is not None:
                await feed.close()
                raise error  # Expired -> 410, StoreClosed -> 503 via the error handlers
        return ClosingStream(feed.lines(), media_type="application/x-ndjson", on_close=feed.close)

    return router
