"""cronloop's REST API server: resources, actions, logs and the change feed over HTTP.

- :mod:`~cronloop.server.app`: :func:`create_app`, the FastAPI application.
- :mod:`~cronloop.server.auth`: the bearer token and the credentials file shared with the CLI.
- Private modules hold the routes (``_resources``, ``_actions``, ``_logs``, ``_watch``), what
  the API shows and accepts (``_present``: env values masked), errors and streaming helpers.

See docs/api-server.md.
"""

from __future__ import annotations

from cronloop.server._actions import CANCELLED_BY_USER, manual_run_name
from cronloop.server._errors import ApiError
from cronloop.server._present import REDACTED, SYSTEM_PREFIX, redact
from cronloop.server._resources import APPLY_HEADER, MAX_BODY_BYTES, apply_to_store, check_apply
from cronloop.server._watch import EXPIRY_CHECK_SECONDS
from cronloop.server.app import create_app
from cronloop.server.auth import (
    CREDENTIALS_FILE,
    DEFAULT_SERVER_URL,
    Credentials,
    CredentialsError,
    bearer_dependency,
    credentials_path,
    generate_token,
    load_credentials,
    load_or_create_credentials,
    save_credentials,
    token_matches,
)

__all__ = [
    "APPLY_HEADER",
    "CANCELLED_BY_USER",
    "CREDENTIALS_FILE",
    "DEFAULT_SERVER_URL",
    "EXPIRY_CHECK_SECONDS",
    "MAX_BODY_BYTES",
    "REDACTED",
    "SYSTEM_PREFIX",
    "ApiError",
    "Credentials",
    "CredentialsError",
    "apply_to_store",
    "bearer_dependency",
    "check_apply",
    "create_app",
    "credentials_path",
    "generate_token",
    "load_credentials",
    "load_or_create_credentials",
    "manual_run_name",
    "redact",
    "save_credentials",
    "token_matches",
]
