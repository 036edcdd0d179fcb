"""Bearer-token auth of every endpoint but /healthz, and the credentials file helpers."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx
import pytest

from cronloop.server import (
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
from tests.server.conftest import TOKEN

GUARDED = [
    ("GET", "/status"),
    ("GET", "/metrics"),
    ("GET", "/apis/cronloop.dev/v1/cronjobs"),
    ("GET", "/apis/cronloop.dev/v1/jobs/x"),
    ("POST", "/apis/cronloop.dev/v1/cronjobs"),
    ("PUT", "/apis/cronloop.dev/v1/cronjobs/x"),
    ("DELETE", "/apis/cronloop.dev/v1/jobs/x"),
    ("POST", "/apis/cronloop.dev/v1/cronjobs/x/trigger"),
    ("POST", "/apis/cronloop.dev/v1/jobs/x/cancel"),
    ("GET", "/apis/cronloop.dev/v1/jobs/x/logs"),
    ("GET", "/apis/cronloop.dev/v1/watch"),
]


@pytest.mark.parametrize(("method", "path"), GUARDED)
async def test_missing_token_is_401_with_challenge(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path, headers={"Authorization": ""})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization" in response.json()["error"]


@pytest.mark.parametrize(("method", "path"), GUARDED)
async def test_wrong_token_is_401_and_not_echoed(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path, headers={"Authorization": "Bearer guessed-token"})
    assert response.status_code == 401
    assert response.json() == {"error": "invalid token"}
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert "guessed-token" not in response.text


async def test_other_scheme_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/apis/cronloop.dev/v1/jobs", headers={"Authorization": f"Basic {TOKEN}"}
    )
    assert response.status_code == 401
    assert "Bearer" in response.json()["error"]


async def test_right_token_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.get("/apis/cronloop.dev/v1/jobs")
    assert response.status_code == 200
    assert response.json()["items"] == []


async def test_healthz_needs_no_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_token_matches_compares_exactly() -> None:
    token = generate_token()
    assert token_matches(token, token)
    assert not token_matches(token, token[:-1])
    assert not token_matches(token, token + "x")
    assert len(token) >= 43  # 32 bytes of entropy in URL-safe base64
    assert generate_token() != token


def test_bearer_dependency_refuses_an_empty_token() -> None:
    with pytest.raises(ValueError, match="token"):
        bearer_dependency("")


def test_credentials_round_trip_with_mode_0600(tmp_path: Path) -> None:
    state = tmp_path / "state"
    path = save_credentials(state, Credentials(server="http://127.0.0.1:9", token="abc"))
    assert path == credentials_path(state)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"server": "http://127.0.0.1:9", "token": "abc"}
    assert load_credentials(state) == Credentials(server="http://127.0.0.1:9", token="abc")


def test_credentials_repr_hides_the_token() -> None:
    assert "abc" not in repr(Credentials(server="http://x", token="abc"))


def test_load_or_create_generates_once_and_keeps_the_token(tmp_path: Path) -> None:
    first = load_or_create_credentials(tmp_path, "http://127.0.0.1:8086")
    again = load_or_create_credentials(tmp_path, "http://127.0.0.1:8086")
    assert again == first
    moved = load_or_create_credentials(tmp_path, "http://127.0.0.1:9999")
    assert moved.token == first.token
    assert load_credentials(tmp_path).server == "http://127.0.0.1:9999"


def test_load_or_create_does_not_overwrite_a_damaged_file(tmp_path: Path) -> None:
    credentials_path(tmp_path).write_text("{not json")
    with pytest.raises(CredentialsError, match="cannot read credentials"):
        load_or_create_credentials(tmp_path)
    assert credentials_path(tmp_path).read_text() == "{not json"


def test_missing_credentials_name_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match=r"credentials\.json: no credentials file.*up"):
        load_credentials(tmp_path)


def test_credentials_missing_a_field_name_it(tmp_path: Path) -> None:
    credentials_path(tmp_path).write_text(json.dumps({"server": "http://x"}))
    with pytest.raises(CredentialsError, match="token: required"):
        load_credentials(tmp_path)
