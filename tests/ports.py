"""Ports for tests' own servers: on 127.0.0.1 only."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listened on a moment ago (nothing listens on it once
    this returns, so it also serves as a port where no server answers)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
