"""The stream helpers: fan-in, line prefixing, and the watch feed's error line."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator

import pytest

from cronloop.server._logs import MAX_LINE_BYTES, prefix_lines
from cronloop.server._streaming import merge
from cronloop.server._watch import _Feed
from cronloop.store import EventType, Expired, StoredObject, WatchEvent


async def _items(
    *items: bytes, closed: list[str] | None = None, name: str = ""
) -> AsyncGenerator[bytes, None]:
    try:
        for item in items:
            yield item
    finally:
        if closed is not None:
            closed.append(name)


async def _collect(source: AsyncIterator[bytes]) -> list[bytes]:
    async with asyncio.timeout(10):
        return [item async for item in source]


async def test_merge_yields_everything_from_every_source() -> None:
    got = await _collect(merge([_items(b"a1", b"a2"), _items(b"b1")]))
    assert sorted(got) == [b"a1", b"a2", b"b1"]
    assert got.index(b"a1") < got.index(b"a2")  # each source keeps its order


async def test_merge_closes_sources_when_closed_early() -> None:
    closed: list[str] = []
    gate = asyncio.Event()

    async def endless() -> AsyncGenerator[bytes, None]:
        try:
            yield b"first"
            await gate.wait()  # never set: only cancellation ends this source
            yield b"never"
        finally:
            closed.append("endless")

    merged = merge([endless(), _items(b"x", closed=closed, name="short")])
    async with asyncio.timeout(10):
        first = await anext(merged)
        await merged.aclose()
    assert first in (b"first", b"x")
    assert "endless" in closed


async def test_merge_raises_a_source_error() -> None:
    async def broken() -> AsyncGenerator[bytes, None]:
        yield b"ok"
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        await _collect(merge([broken()]))


async def test_prefix_lines_splits_across_chunks_and_ends_the_last_line() -> None:
    source = _items(b"he", b"llo\nwor", b"ld\n\nlast")
    got = b"".join(await _collect(prefix_lines(source, b"[eu] ")))
    assert got == b"[eu] hello\n[eu] world\n[eu] \n[eu] last\n"


async def test_prefix_lines_cuts_endless_lines() -> None:
    source = _items(b"x" * (MAX_LINE_BYTES * 2 + 5))
    lines = b"".join(await _collect(prefix_lines(source, b"> "))).split(b"\n")
    assert [len(line) for line in lines[:-1]] == [MAX_LINE_BYTES + 2, MAX_LINE_BYTES + 2, 7]


async def test_feed_ends_with_an_error_line_when_history_is_compacted_under_it() -> None:
    job = StoredObject(
        "Job",
        "a",
        spec={"main": {"runtime": "process", "argv": ["true"]}},
        uid="u1",
        resource_version=5,
    )

    async def events() -> AsyncGenerator[WatchEvent, None]:
        yield WatchEvent(EventType.ADDED, job, 5)
        raise Expired(5, 9)

    feed = _Feed(events())
    lines = [json.loads(line) for line in await _collect(feed.lines())]
    await feed.close()
    assert lines[0]["type"] == "ADDED"
    assert lines[0]["object"]["metadata"]["name"] == "a"
    assert lines[1]["type"] == "ERROR"
    assert lines[1]["code"] == 410
    assert "list again" in lines[1]["error"]
