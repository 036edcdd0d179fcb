"""``create_app``: the cronloop REST API as a FastAPI application.

The app is a thin layer over the :class:`~cronloop.store.Store`: every route re-reads the
store, writes with compare-and-set, and leaves the rest to the controllers watching it. Every
route but ``/healthz`` needs the bearer token (a router dependency, so no HTTP middleware
wraps, buffers or delays the streaming routes). ``cronloop up`` serves it with uvicorn.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Response
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from cronloop import __version__
from cronloop.server._actions import action_router
from cronloop.server._context import ServerContext, utc_now
from cronloop.server._errors import install_error_handlers
from cronloop.server._logs import log_router
from cronloop.server._resources import resource_router
from cronloop.server._watch import watch_router
from cronloop.server.auth import bearer_dependency
from cronloop.store import Store

__all__ = ["create_app"]


def create_app(
    store: Store,
    *,
    token: str,
    log_dir: Path,
    registry: CollectorRegistry | None = None,
    manager_status: Callable[[], dict[str, Any]] | None = None,
    poll_interval: float = 0.2,
    clock: Callable[[], datetime] = utc_now,
) -> FastAPI:
    """The API over ``store``, guarded by ``token``.

    ``log_dir`` is where attempt logs live (a log path outside it is never served);
    ``registry`` is what ``/metrics`` exposes (the process-wide default registry when
    ``None``); ``manager_status`` answers ``/status``; ``poll_interval`` is how often a
    followed log is re-read; ``clock`` names manual runs.
    """
    if poll_interval <= 0:
        raise ValueError(f"poll_interval must be > 0, got {poll_interval}")
    ctx = ServerContext(store=store, log_dir=log_dir, poll_interval=poll_interval, clock=clock)
    app = FastAPI(
        title="cronloop",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    install_error_handlers(app)
    exposed = REGISTRY if registry is None else registry

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: answers without a token."""
        return {"status": "ok"}

    guarded = APIRouter(dependencies=[Depends(bearer_dependency(token))])

    @guarded.get("/status")
    async def server_status() -> dict[str, Any]:
        """The controller manager's state, and the store's revision."""
        body: dict[str, Any] = {
            "version": __version__,
            "revision": await store.current_revision(),
        }
        if manager_status is not None:
            body["manager"] = manager_status()
        return body

    @guarded.get("/metrics")
    async def metrics() -> Response:
        """Prometheus metrics in the text exposition format."""
        return Response(generate_latest(exposed), media_type=CONTENT_TYPE_LATEST)

    # Order matters: the fixed paths (watch, actions, logs) before /{plural}/{name}.
    guarded.include_router(watch_router(ctx))
    guarded.include_router(action_router(ctx))
    guarded.include_router(log_router(ctx))
    guarded.include_router(resource_router(ctx))
    app.include_router(guarded)
    return app
