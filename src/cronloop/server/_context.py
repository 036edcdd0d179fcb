"""What every route of the API server shares: the store, the log directory, the clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cronloop.store import Store

__all__ = ["KIND_OF_PLURAL", "PLURAL_OF_KIND", "ServerContext", "utc_now"]

#: URL segment of each kind (``/apis/cronloop.dev/v1/<plural>``).
KIND_OF_PLURAL: dict[str, str] = {"cronjobs": "CronJob", "jobs": "Job", "subjobs": "SubJob"}
PLURAL_OF_KIND: dict[str, str] = {kind: plural for plural, kind in KIND_OF_PLURAL.items()}


def utc_now() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ServerContext:
    """The server's dependencies, handed to each router when the app is built.

    ``poll_interval`` is how often a followed log checks its file and its attempt's phase;
    ``clock`` names manual runs (injected by tests).
    """

    store: Store
    log_dir: Path
    poll_interval: float = 0.2
    clock: Callable[[], datetime] = utc_now
