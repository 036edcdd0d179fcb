"""The API's bearer token: generating it, saving it with the server URL, checking requests.

``cronloop up`` generates a token on first start and writes ``<state dir>/credentials.json``
(mode 0600) holding ``{"server": URL, "token": TOKEN}``; the CLI reads the same file through
:func:`load_credentials`, so both sides share this one module. Requests are checked by
:func:`bearer_dependency`, a FastAPI dependency (not an HTTP middleware, so streaming responses
are untouched), with a constant-time comparison. The token is never logged or echoed.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, Request, status

__all__ = [
    "CREDENTIALS_FILE",
    "DEFAULT_SERVER_URL",
    "Credentials",
    "CredentialsError",
    "bearer_dependency",
    "credentials_path",
    "generate_token",
    "load_credentials",
    "load_or_create_credentials",
    "save_credentials",
    "token_matches",
]

#: Name of the credentials file inside the state directory.
CREDENTIALS_FILE = "credentials.json"
#: Where ``cronloop up`` listens unless told otherwise.
DEFAULT_SERVER_URL = "http://127.0.0.1:8086"

_REALM = 'Bearer realm="cronloop"'


class CredentialsError(ValueError):
    """The credentials file is missing, unreadable or malformed; the message names the file."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """The server URL and the bearer token that grants access to it."""

    server: str
    token: str

    def __repr__(self) -> str:  # the token must not leak into logs or tracebacks
        return f"Credentials(server={self.server!r}, token='***')"


def generate_token() -> str:
    """A fresh random token (32 bytes of entropy, URL-safe text)."""
    return secrets.token_urlsafe(32)


def token_matches(expected: str, given: str) -> bool:
    """Whether ``given`` equals ``expected``, compared in constant time."""
    return hmac.compare_digest(expected.encode(), given.encode())


def credentials_path(state_dir: Path) -> Path:
    """``<state_dir>/credentials.json``."""
    return state_dir / CREDENTIALS_FILE


def save_credentials(state_dir: Path, credentials: Credentials) -> Path:
    """Write ``credentials`` to ``<state_dir>/credentials.json`` with mode 0600; return the path.

    The file is created with its final mode (never world-readable, not even for an instant)
    and replaced atomically, so a reader never sees half a file.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    path = credentials_path(state_dir)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = json.dumps({"server": credentials.server, "token": credentials.token}, indent=2)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, (data + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def load_credentials(state_dir: Path) -> Credentials:
    """Read ``<state_dir>/credentials.json``.

    :raises CredentialsError: the file is missing, is not JSON, or lacks ``server``/``token``.
    """
    path = credentials_path(state_dir)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CredentialsError(
            f"{path}: no credentials file (start the server with `cronloop up`, or pass "
            "--server and --token)"
        ) from None
    except (OSError, ValueError) as exc:
        raise CredentialsError(f"{path}: cannot read credentials: {exc}") from None
    if not isinstance(data, dict):
        raise CredentialsError(f"{path}: expected a JSON object with server and token")
    for key in ("server", "token"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise CredentialsError(f"{path}: {key}: required non-empty string is missing")
    return Credentials(server=data["server"], token=data["token"])


def load_or_create_credentials(state_dir: Path, server: str = DEFAULT_SERVER_URL) -> Credentials:
    """The saved credentials, or new ones (fresh token, ``server``) saved on first start.

    A saved token is kept across restarts so clients stay logged in; the saved URL is
    replaced by ``server`` when it changed (the server moved to another port).
    """
    try:
        saved = load_credentials(state_dir)
    except CredentialsError:
        if credentials_path(state_dir).exists():
            raise  # a damaged file is the operator's to look at, not to overwrite silently
        saved = None
    if saved is not None and saved.server == server:
        return saved
    credentials = Credentials(server=server, token=saved.token if saved else generate_token())
    save_credentials(state_dir, credentials)
    return credentials


def bearer_dependency(token: str) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency that refuses requests without ``Authorization: Bearer <token>``.

    Refusals are 401 with a ``WWW-Authenticate`` header; the message never repeats what the
    client sent.
    """
    if not token:
        raise ValueError("token must not be empty")

    # async: FastAPI would run a plain function in its thread pool, a hop per request.
    async def check(request: Request) -> None:
        header = request.headers.get("authorization")
        if header is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing Authorization header (expected 'Bearer <token>')",
                headers={"WWW-Authenticate": _REALM},
            )
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "Authorization header must be 'Bearer <token>'",
                headers={"WWW-Authenticate": _REALM},
            )
        if not token_matches(token, given.strip()):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "invalid token",
                headers={"WWW-Authenticate": f'{_REALM}, error="invalid_token"'},
            )

    return check
