"""The CLI's HTTP client of the cronloop API server (synchronous httpx).

Where to connect comes from, first to last: ``--server``/``--token``, the environment
(``CRONLOOP_SERVER``, ``CRONLOOP_TOKEN``), then ``<state dir>/credentials.json`` written by
``cronloop up``. Every failure becomes a :class:`ClientError` whose message is the one line the
CLI prints: the server's own ``{"error": ...}`` message, or what to do when it is unreachable.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from cronloop.server.auth import CredentialsError, load_credentials

__all__ = [
    "API_PREFIX",
    "ApplyResult",
    "ClientError",
    "CronloopClient",
    "ServerUnreachable",
    "resolve_connection",
]

API_PREFIX = "/apis/cronloop.dev/v1"

ApplyResult = tuple[dict[str, Any], str]
"""The object as stored and what the apply did: ``created``, ``configured`` or ``unchanged``."""


class ClientError(Exception):
    """A request that failed; ``status`` is the HTTP status when the server answered."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ServerUnreachable(ClientError):
    """No server answered at the URL."""


def resolve_connection(server: str | None, token: str | None, state_dir: Path) -> tuple[str, str]:
    """``(server URL, token)``: the arguments where given, else the credentials file's values.

    :raises ClientError: something is missing and the credentials file cannot supply it.
    """
    if server and token:
        return server, token
    try:
        saved = load_credentials(state_dir)
    except CredentialsError as exc:
        raise ClientError(str(exc)) from None
    return server or saved.server, token or saved.token


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        message = str(body["error"])
    else:
        message = response.text.strip() or response.reason_phrase
    if response.status_code == 401:
        return f"{message} (the server refused the token: check --token or credentials.json)"
    return message


class CronloopClient:
    """Calls of the cronloop API; use as a context manager or call :meth:`close`.

    ``transport`` replaces the network (tests pass ``httpx.MockTransport``); ``timeout`` bounds
    every call except the streams of :meth:`watch` and followed :meth:`logs`.
    """

    def __init__(
        self,
        server: str,
        token: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.server = server.rstrip("/")
        self._http = httpx.Client(
            base_url=self.server,
            headers={"Authorization": f"Bearer {token}"},
            transport=transport,
            timeout=timeout,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- plumbing ---------------------------------------------------------------------------

    def _unreachable(self, exc: httpx.TransportError) -> ServerUnreachable:
        return ServerUnreachable(
            f"cannot reach the cronloop server at {self.server}: is `cronloop up` running? ({exc})"
        )

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise self._unreachable(exc) from None
        except httpx.TransportError as exc:
            raise ClientError(f"request to {self.server} failed: {exc}") from None
        if response.is_error:
            raise ClientError(_error_message(response), status=response.status_code)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body = self._request(method, path, **kwargs).json()
        if not isinstance(body, dict):
            raise ClientError(f"{method} {path}: the server answered {type(body).__name__}")
        return body

    @contextlib.contextmanager
    def _stream(
        self, path: str, params: dict[str, Any], *, read_timeout: float | None = None
    ) -> Iterator[httpx.Response]:
        """An open streaming response; transport failures while reading become ClientError."""
        timeout = httpx.Timeout(self._http.timeout.connect, read=read_timeout)
        try:
            with self._http.stream("GET", path, params=params, timeout=timeout) as response:
                if response.is_error:
                    response.read()
                    raise ClientError(_error_message(response), status=response.status_code)
                yield response
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise self._unreachable(exc) from None
        except httpx.ReadTimeout:
            raise
        except httpx.TransportError as exc:
            raise ClientError(f"stream from {self.server} broke off: {exc}") from None

    # ---- resources --------------------------------------------------------------------------

    def list(
        self, plural: str, *, label_selector: dict[str, str] | None = None, owner: str | None = None
    ) -> dict[str, Any]:
        """The list body: ``items`` and ``metadata.resourceVersion`` (to watch from)."""
        params: dict[str, str] = {}
        if label_selector:
            params["labelSelector"] = ",".join(f"{k}={v}" for k, v in label_selector.items())
        if owner:
            params["owner"] = owner
        return self._json("GET", f"{API_PREFIX}/{plural}", params=params)

    def get(self, plural: str, name: str) -> dict[str, Any]:
        """One object."""
        return self._json("GET", f"{API_PREFIX}/{plural}/{name}")

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create an object (fails if the name is taken)."""
        return self._json("POST", f"{API_PREFIX}/{plural}", json=body)

    def apply(self, plural: str, body: dict[str, Any]) -> ApplyResult:
        """Create or update an object's spec, labels and annotations."""
        name = body.get("metadata", {}).get("name", "")
        response = self._request("PUT", f"{API_PREFIX}/{plural}/{name}", json=body)
        outcome = response.headers.get("cronloop-apply", "configured")
        return response.json(), outcome

    def delete(self, plural: str, name: str) -> dict[str, Any]:
        """Delete an object and everything it owns."""
        return self._json("DELETE", f"{API_PREFIX}/{plural}/{name}")

    # ---- actions ----------------------------------------------------------------------------

    def trigger(self, cronjob: str) -> dict[str, Any]:
        """Start a run of ``cronjob`` now; returns the new Job."""
        return self._json("POST", f"{API_PREFIX}/cronjobs/{cronjob}/trigger")

    def suspend(self, cronjob: str) -> dict[str, Any]:
        """Stop scheduling ``cronjob``."""
        return self._json("POST", f"{API_PREFIX}/cronjobs/{cronjob}/suspend")

    def resume(self, cronjob: str) -> dict[str, Any]:
        """Schedule ``cronjob`` again."""
        return self._json("POST", f"{API_PREFIX}/cronjobs/{cronjob}/resume")

    def cancel(self, job: str) -> dict[str, Any]:
        """Ask for ``job`` to be cancelled."""
        return self._json("POST", f"{API_PREFIX}/jobs/{job}/cancel")

    def status(self) -> dict[str, Any]:
        """The server's ``/status``."""
        return self._json("GET", "/status")

    # ---- streams ----------------------------------------------------------------------------

    def logs(
        self,
        job: str,
        *,
        target: str | None = None,
        attempt: int | None = None,
        follow: bool = False,
    ) -> Generator[bytes, None, None]:
        """The log's bytes as they arrive (until the attempt ends, when following)."""
        params: dict[str, Any] = {"follow": "true" if follow else "false"}
        if target is not None:
            params["target"] = target
        if attempt is not None:
            params["attempt"] = attempt
        with self._stream(f"{API_PREFIX}/jobs/{job}/logs", params) as response:
            yield from response.iter_bytes()

    def watch(
        self,
        kinds: builtins.list[str] | None = None,
        *,
        from_revision: int | None = None,
        timeout: float | None = None,
    ) -> Generator[dict[str, Any], None, None]:
        """Change events ``{"type", "revision", "object"}``.

        Without ``timeout`` the stream never ends on its own; with it, the stream ends once
        ``timeout`` seconds have passed (checked after each event, and after ``timeout``
        seconds without one).

        :raises ClientError: the server ended the stream with an ``ERROR`` event (history
            compacted: list again and watch from the new revision).
        """
        params: dict[str, Any] = {}
        if kinds:
            params["kinds"] = ",".join(kinds)
        if from_revision is not None:
            params["from"] = from_revision
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            with self._stream(f"{API_PREFIX}/watch", params, read_timeout=timeout) as response:
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        raise ClientError(str(event.get("error")), status=event.get("code"))
                    yield event
                    if deadline is not None and time.monotonic() >= deadline:
                        return
        except httpx.ReadTimeout:
            if timeout is None:
                raise ClientError(f"watch stream from {self.server} timed out") from None
