"""A streaming response that always closes its generator, and a fan-in of several streams.

Starlette's ``StreamingResponse`` stops iterating when the client disconnects, but an async
generator left suspended at a ``yield`` is only closed when the garbage collector gets to it;
log and watch streams hold store watchers and polling tasks, so :class:`ClosingStream` closes
the generator as soon as the response ends. :func:`merge` interleaves several streams as
their items arrive (``asyncio`` has no built-in for that; ``aiostream`` would be a dependency
for one function).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

__all__ = ["ClosingStream", "merge"]


class ClosingStream(StreamingResponse):
    """A ``StreamingResponse`` over an async generator that is closed when the response ends.

    ``on_close`` runs after that, also when the generator never started.
    """

    def __init__(
        self,
        content: AsyncGenerator[bytes, None],
        *,
        media_type: str,
        status_code: int = 200,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(content, status_code=status_code, media_type=media_type)
        self._generator = content
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self._generator.aclose()
            finally:
                # A generator that never started runs no finally block of its own.
                if self._on_close is not None:
                    await self._on_close()


async def merge(
    sources: Sequence[AsyncGenerator[bytes, None]], *, buffer: int = 64
) -> AsyncGenerator[bytes, None]:
    """Items of every source as they come; ends when all sources end, raises the first error.

    Each source runs in its own task; at most ``buffer`` items wait to be consumed, so a slow
    client slows the sources down instead of growing memory.
    """
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=buffer)

    async def pump(source: AsyncGenerator[bytes, None]) -> None:
        try:
            async for item in source:
                await queue.put(item)
        except Exception as exc:  # handed to the consumer, which re-raises it
            await queue.put(exc)
            return
        finally:
            await source.aclose()
        await queue.put(None)

    tasks = [asyncio.create_task(pump(source)) for source in sources]
    try:
        running = len(tasks)
        while running:
            item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
