"""How the API reports failures: one JSON shape, ``{"error": "<message>"}``, and fixed statuses.

Store and validation errors already name the object and the field; the handlers here only map
them to HTTP statuses (404 NotFound, 409 AlreadyExists/Conflict, 410 Expired, 422 invalid
input, 503 store closed), so every endpoint reports the same error the same way.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from cronloop.api import ResourceError
from cronloop.store import AlreadyExists, Conflict, Expired, InvalidObject, NotFound, StoreClosed

__all__ = ["ApiError", "error_response", "install_error_handlers"]


class ApiError(Exception):
    """A request the API refuses: ``status`` and a message naming the object or field."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The API's error body with ``status``."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


_STATUS: list[tuple[type[Exception], int]] = [
    (NotFound, 404),
    (AlreadyExists, 409),
    (Conflict, 409),
    (Expired, 410),
    (InvalidObject, 422),
    (ResourceError, 422),
    (StoreClosed, 503),
]


def _query_problem(error: dict[str, Any]) -> str:
    loc = [str(part) for part in error.get("loc", ()) if part not in ("query", "path", "body")]
    where = ".".join(loc) or "request"
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{where}: {message.replace('Input should be', 'must be')}"


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn errors into ``{"error": ...}`` responses on ``app``."""

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.message)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return error_response(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    async def request_invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(_query_problem(dict(e)) for e in exc.errors())
        return error_response(422, problems or "invalid request")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, request_invalid)
    for error_type, status in _STATUS:

        async def mapped(request: Request, exc: Exception, status: int = status) -> JSONResponse:
            return error_response(status, str(exc))

        app.add_exception_handler(error_type, mapped)
