"""A real cronloop API server on 127.0.0.1 in a background thread, for streaming tests.

httpx's ``ASGITransport`` buffers a whole response before returning it, so endless streams
(watch, followed logs) need a real server. The server thread runs its own event loop with its
own SQLite store; :meth:`LiveServer.call` runs a coroutine there (the store must be used from
the loop that opened it). The listening socket is bound and listening before the thread
starts, so clients can connect at once (the kernel queues them until uvicorn accepts). The
server stops itself when the ``with`` block ends.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from cronloop.server import create_app
from cronloop.store import Store, open_store

T = TypeVar("T")

TOKEN = "live-test-token"
_BOUND = 10.0  # seconds any start, call or stop may take before the test fails


class RequestSeen:
    """ASGI wrapper that sets a threading event when a request for a watched path arrives."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._events: dict[str, threading.Event] = {}

    def event(self, prefix: str) -> threading.Event:
        """The event set by the first request whose path starts with ``prefix``."""
        with self._lock:
            return self._events.setdefault(prefix, threading.Event())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = str(scope["path"])
            with self._lock:
                matched = [e for p, e in self._events.items() if path.startswith(p)]
            for event in matched:
                event.set()
        await self.app(scope, receive, send)


class LiveServer:
    """``with LiveServer(tmp_path) as live:`` serves at ``live.url`` with token ``TOKEN``.

    ``live.watch_requested`` is set when a request under ``/apis/cronloop.dev/v1/watch``
    arrives, and ``live.seen(prefix)`` when one under ``prefix`` does (tests use them to write
    only once a client is connected).
    """

    def __init__(self, root: Path, **app_options: Any) -> None:
        self.root = root
        self.log_dir = root / "logs"
        self.token = TOKEN
        self._seen = RequestSeen(self._not_started)
        self.watch_requested = self._seen.event("/apis/cronloop.dev/v1/watch")
        self._options = app_options
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self.store: Store | None = None
        self._thread = threading.Thread(target=self._run, name="live-server", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the test thread by __enter__/__exit__
            self._failure = exc
            self._ready.set()

    async def _main(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.store = await open_store(self.root / "live.db", poll_interval=0.05)
        try:
            app = create_app(self.store, token=self.token, log_dir=self.log_dir, **self._options)
            self._seen.app = app
            config = uvicorn.Config(
                self._seen,
                log_level="warning",
                lifespan="off",
                ws="none",
                timeout_graceful_shutdown=2,
            )
            self._server = uvicorn.Server(config)
            self._loop = asyncio.get_running_loop()
            self._ready.set()
            await self._server.serve(sockets=[self._sock])
        finally:
            await self.store.close()

    @staticmethod
    async def _not_started(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("the live server's app is not built yet")

    def seen(self, prefix: str) -> threading.Event:
        """Set once a request whose path starts with ``prefix`` has arrived."""
        return self._seen.event(prefix)

    def call(self, fn: Callable[[Store], Awaitable[T]]) -> T:
        """Run ``fn(store)`` on the server's loop and return its result."""
        assert self._loop is not None
        assert self.store is not None
        store = self.store

        async def run() -> T:
            return await fn(store)

        coro: Coroutine[Any, Any, T] = run()
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=_BOUND)

    def __enter__(self) -> Self:
        self._thread.start()
        started = self._ready.wait(_BOUND)
        if not started or self._failure is not None:
            self.__exit__(None, None, None)
            raise RuntimeError("the live server failed to start") from self._failure
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(_BOUND)
        self._sock.close()
        if self._thread.is_alive():
            raise TimeoutError("the live server did not stop")
        if self._failure is not None and exc is None:
            raise RuntimeError("the live server failed") from self._failure
