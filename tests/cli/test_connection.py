"""Where the CLI connects, and what it says when it cannot."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from cronloop.cli.client import ClientError, CronloopClient, ServerUnreachable, resolve_connection
from cronloop.server import Credentials, save_credentials
from tests.cli.conftest import Invoke
from tests.ports import free_port
from tests.server.live import LiveServer


def test_connection_refused_says_to_start_the_server(invoke: Invoke) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = invoke("get", "jobs", env={"CRONLOOP_SERVER": url})
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert "\n" not in line
    assert line.startswith(
        f"error: cannot reach the cronloop server at {url}: is `cronloop up` running?"
    )


def test_wrong_token_is_reported_without_echoing_it(invoke: Invoke) -> None:
    result = invoke("get", "jobs", env={"CRONLOOP_TOKEN": "not-the-token"})
    assert result.exit_code == 1
    assert "invalid token" in result.stderr
    assert "check --token or credentials.json" in result.stderr
    assert "not-the-token" not in result.output


def test_credentials_file_of_the_state_dir_is_used(
    invoke: Invoke, live: LiveServer, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    save_credentials(state, Credentials(server=live.url, token=live.token))
    result = invoke(
        "get",
        "jobs",
        "--state-dir",
        str(state),
        env={"CRONLOOP_SERVER": "", "CRONLOOP_TOKEN": ""},
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "No jobs found.\n"


def test_options_override_the_environment(invoke: Invoke, live: LiveServer) -> None:
    result = invoke(
        "get",
        "jobs",
        "--server",
        live.url,
        "--token",
        live.token,
        env={"CRONLOOP_SERVER": "http://127.0.0.1:1", "CRONLOOP_TOKEN": "wrong"},
    )
    assert result.exit_code == 0, result.output


def test_no_credentials_at_all_is_one_clear_line(invoke: Invoke, tmp_path: Path) -> None:
    result = invoke(
        "get",
        "jobs",
        "--state-dir",
        str(tmp_path / "empty"),
        env={"CRONLOOP_SERVER": "", "CRONLOOP_TOKEN": ""},
    )
    assert result.exit_code == 1
    assert "credentials.json: no credentials file" in result.stderr
    assert "--server and --token" in result.stderr


def test_resolve_connection_fills_gaps_from_the_file(tmp_path: Path) -> None:
    save_credentials(tmp_path, Credentials(server="http://saved:1", token="saved-token"))
    assert resolve_connection(None, None, tmp_path) == ("http://saved:1", "saved-token")
    assert resolve_connection("http://other:2", None, tmp_path) == ("http://other:2", "saved-token")
    assert resolve_connection("http://a", "b", tmp_path / "missing") == ("http://a", "b")
    with pytest.raises(ClientError, match="no credentials file"):
        resolve_connection("http://a", None, tmp_path / "missing")


def test_client_maps_errors_from_an_injected_transport() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/jobs/x"):
            return httpx.Response(409, json={"error": 'Job "x" conflict'})
        if request.url.path.endswith("/jobs/y"):
            return httpx.Response(502, text="bad gateway")
        raise httpx.ConnectError("refused", request=request)

    with CronloopClient("http://fake", "t", transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(ClientError) as conflict:
            client.get("jobs", "x")
        assert (conflict.value.status, conflict.value.message) == (409, 'Job "x" conflict')
        with pytest.raises(ClientError, match="bad gateway"):
            client.get("jobs", "y")
        with pytest.raises(ServerUnreachable, match="is `cronloop up` running"):
            client.get("jobs", "z")
