"""The event loop ``cronloop up`` runs on: uvloop where it is installed, else asyncio's own.

Every controller, runtime and the API share one loop, so the loop's own cost per callback,
timer and pipe read is paid by every run. uvloop (libuv) cuts it: the trigger benchmark's
burst of 10,000 durable runs goes from about 3,500 to about 4,400 runs/s on the same machine
(docs/bench-trigger.md). The code depends only on the asyncio API, so the standard loop stays
a choice (``--loop asyncio``) and is what the unit tests run on; the process runtime's tests
run on both loops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal

__all__ = ["LOOPS", "LoopName", "loop_factory"]

LoopName = Literal["auto", "asyncio", "uvloop"]
#: The accepted ``--loop`` values.
LOOPS: tuple[LoopName, ...] = ("auto", "asyncio", "uvloop")


def loop_factory(name: LoopName = "auto") -> Callable[[], asyncio.AbstractEventLoop]:
    """A function making a new event loop of kind ``name`` (for :class:`asyncio.Runner`).

    ``auto`` is uvloop when it can be imported (it is a dependency except on Windows) and
    asyncio's loop otherwise.

    :raises ValueError: if ``name`` is not one of :data:`LOOPS`, or is ``uvloop`` and uvloop
        is not installed.
    """
    if name not in LOOPS:
        raise ValueError(f"loop must be one of {', '.join(LOOPS)}, got {name!r}")
    if name == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise ValueError("loop 'uvloop': uvloop is not installed") from None
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
