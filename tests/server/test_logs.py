"""The log endpoint: whole logs, targets and attempts, and following a growing file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cronloop.api import Attempt, Phase, StepName, SubJob, parse_resource
from cronloop.controllers.objects import to_stored, typed
from cronloop.store import Store
from tests.server.builders import add_subjob, job_body, set_attempt_phase
from tests.server.live import LiveServer

API = "/apis/cronloop.dev/v1"


async def _job(client: httpx.AsyncClient, store: Store, name: str = "adhoc") -> None:
    response = await client.post(f"{API}/jobs", json=job_body(name))
    assert response.status_code == 201


def _log(log_dir: Path, name: str, text: str) -> Path:
    path = log_dir / "adhoc" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


async def test_one_target_log_is_returned_as_is(
    client: httpx.AsyncClient, store: Store, log_dir: Path
) -> None:
    await _job(client, store)
    path = _log(log_dir, "eu.1.log", "line one\nline two\nno newline")
    await add_subjob(
        store, await store.get("Job", "adhoc"), "eu", attempts=[(Phase.SUCCEEDED, path)]
    )
    response = await client.get(f"{API}/jobs/adhoc/logs", params={"target": "eu"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "line one\nline two\nno newline"


async def test_all_targets_are_prefixed_line_by_line(
    client: httpx.AsyncClient, store: Store, log_dir: Path
) -> None:
    await _job(client, store)
    job = await store.get("Job", "adhoc")
    eu = _log(log_dir, "eu.1.log", "a\nb\n")
    us = _log(log_dir, "us.1.log", "c\npartial")
    await add_subjob(store, job, "eu", attempts=[(Phase.SUCCEEDED, eu)])
    await add_subjob(store, job, "us", attempts=[(Phase.FAILED, us)])
    response = await client.get(f"{API}/jobs/adhoc/logs")
    assert response.text == "[eu] a\n[eu] b\n[us] c\n[us] partial\n"


async def test_attempt_defaults_to_the_last_and_can_be_chosen(
    client: httpx.AsyncClient, store: Store, log_dir: Path
) -> None:
    await _job(client, store)
    first = _log(log_dir, "eu.1.log", "first try\n")
    second = _log(log_dir, "eu.2.log", "second try\n")
    await add_subjob(
        store,
        await store.get("Job", "adhoc"),
        "eu",
        attempts=[(Phase.FAILED, first), (Phase.SUCCEEDED, second)],
    )
    last = await client.get(f"{API}/jobs/adhoc/logs", params={"target": "eu"})
    assert last.text == "second try\n"
    chosen = await client.get(f"{API}/jobs/adhoc/logs", params={"target": "eu", "attempt": 1})
    assert chosen.text == "first try\n"
    missing = await client.get(f"{API}/jobs/adhoc/logs", params={"target": "eu", "attempt": 3})
    assert missing.status_code == 404
    assert missing.json()["error"] == 'SubJob "adhoc-eu" has no attempt 3 (attempts: 1, 2)'


async def test_unknown_target_and_job_are_404(
    client: httpx.AsyncClient, store: Store, log_dir: Path
) -> None:
    await _job(client, store)
    await add_subjob(store, await store.get("Job", "adhoc"), "eu")
    response = await client.get(f"{API}/jobs/adhoc/logs", params={"target": "ap"})
    assert response.status_code == 404
    assert response.json()["error"] == "Job \"adhoc\" has no target 'ap' (targets: eu)"
    response = await client.get(f"{API}/jobs/ghost/logs")
    assert response.status_code == 404
    assert response.json()["error"] == 'Job "ghost" not found'


async def test_no_attempt_yet_or_no_file_yet_is_empty(
    client: httpx.AsyncClient, store: Store, log_dir: Path
) -> None:
    await _job(client, store)
    job = await store.get("Job", "adhoc")
    await add_subjob(store, job, "eu")
    await add_subjob(store, job, "us", attempts=[(Phase.RUNNING, log_dir / "adhoc" / "none.log")])
    response = await client.get(f"{API}/jobs/adhoc/logs")
    assert response.status_code == 200
    assert response.text == ""


async def test_a_log_path_outside_the_log_dir_is_refused(
    client: httpx.AsyncClient, store: Store, tmp_path: Path
) -> None:
    await _job(client, store)
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("private")
    await add_subjob(
        store, await store.get("Job", "adhoc"), "eu", attempts=[(Phase.SUCCEEDED, outside)]
    )
    response = await client.get(f"{API}/jobs/adhoc/logs", params={"target": "eu"})
    assert response.status_code == 403
    assert "outside the server's log directory" in response.json()["error"]
    assert "private" not in response.text


async def test_follow_of_a_finished_attempt_returns_the_whole_log(
    client: httpx.AsyncClient, store: Store, log_dir: Path
) -> None:
    await _job(client, store)
    path = _log(log_dir, "eu.1.log", "done\n")
    await add_subjob(
        store, await store.get("Job", "adhoc"), "eu", attempts=[(Phase.SUCCEEDED, path)]
    )
    response = await client.get(f"{API}/jobs/adhoc/logs", params={"target": "eu", "follow": "true"})
    assert response.text == "done\n"


# ---- following a live file (needs a real server: ASGITransport buffers whole responses) ----


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(tmp_path, poll_interval=0.05) as server:
        yield server


def _http(live: LiveServer) -> httpx.Client:
    return httpx.Client(
        base_url=live.url,
        headers={"Authorization": f"Bearer {live.token}"},
        timeout=httpx.Timeout(10.0),  # every read is bounded: a hang fails the test
    )


def _setup_job(live: LiveServer, targets: dict[str, Path]) -> None:
    async def create(store: Store) -> None:
        job = await store.create(to_stored(parse_resource(job_body("adhoc"))))
        for target, path in targets.items():
            await add_subjob(store, job, target, attempts=[(Phase.RUNNING, path)])

    live.call(create)


def _append(path: Path, text: str) -> None:
    with path.open("a") as file:
        file.write(text)


def test_follow_streams_growth_until_the_attempt_ends(live: LiveServer) -> None:
    path = live.log_dir / "adhoc" / "eu.1.log"
    path.parent.mkdir(parents=True)
    path.write_text("one\n")
    _setup_job(live, {"eu": path})
    with (
        _http(live) as http,
        http.stream(
            "GET", f"{API}/jobs/adhoc/logs", params={"target": "eu", "follow": "true"}
        ) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(lines) == "one"
        _append(path, "two\n")
        assert next(lines) == "two"
        _append(path, "three\n")
        live.call(lambda store: set_attempt_phase(store, "adhoc-eu", 1, Phase.SUCCEEDED))
        assert list(lines) == ["three"]  # the stream ended by itself


def test_follow_all_targets_interleaves_and_ends_when_all_end(live: LiveServer) -> None:
    eu = live.log_dir / "adhoc" / "eu.1.log"
    us = live.log_dir / "adhoc" / "us.1.log"
    eu.parent.mkdir(parents=True)
    eu.write_text("")
    us.write_text("")
    _setup_job(live, {"eu": eu, "us": us})
    with (
        _http(live) as http,
        http.stream("GET", f"{API}/jobs/adhoc/logs", params={"follow": "true"}) as response,
    ):
        lines = response.iter_lines()
        _append(us, "from us\n")
        assert next(lines) == "[us] from us"
        _append(eu, "from eu\n")
        assert next(lines) == "[eu] from eu"
        live.call(lambda store: set_attempt_phase(store, "adhoc-eu", 1, Phase.SUCCEEDED))
        _append(us, "still us\n")
        assert next(lines) == "[us] still us"
        live.call(lambda store: set_attempt_phase(store, "adhoc-us", 1, Phase.FAILED))
        assert list(lines) == []


def test_follow_waits_for_the_first_attempt(live: LiveServer) -> None:
    _setup_job(live, {})
    path = live.log_dir / "adhoc" / "eu.1.log"
    path.parent.mkdir(parents=True)
    path.write_text("started late\n")

    async def fan_out(store: Store) -> None:
        await add_subjob(store, await store.get("Job", "adhoc"), "eu")

    async def dispatch(store: Store) -> None:
        obj = await store.get("SubJob", "adhoc-eu")
        sub = typed(obj, SubJob)
        attempt = Attempt(
            number=1, step=StepName.MAIN, phase=Phase.RUNNING, runtime={"logPath": str(path)}
        )
        status = sub.status.model_copy(update={"attempts": (attempt,), "phase": Phase.RUNNING})
        await store.update_status(to_stored(sub.model_copy(update={"status": status})))

    live.call(fan_out)
    with (
        _http(live) as http,
        http.stream(
            "GET", f"{API}/jobs/adhoc/logs", params={"target": "eu", "follow": "true"}
        ) as response,
    ):
        assert response.status_code == 200
        live.call(dispatch)
        lines = response.iter_lines()
        assert next(lines) == "started late"
        live.call(lambda store: set_attempt_phase(store, "adhoc-eu", 1, Phase.SUCCEEDED))
        assert list(lines) == []


def test_follow_of_a_job_not_fanned_out_yet_waits_for_its_subjobs(live: LiveServer) -> None:
    _setup_job(live, {})  # as right after `cronloop run`: no sub-jobs yet
    path = live.log_dir / "adhoc" / "us.1.log"
    path.parent.mkdir(parents=True)
    path.write_text("")

    async def fan_out(store: Store) -> None:
        job = await store.get("Job", "adhoc")
        await add_subjob(store, job, "us", attempts=[(Phase.RUNNING, path)])

    with (
        _http(live) as http,
        http.stream("GET", f"{API}/jobs/adhoc/logs", params={"follow": "true"}) as response,
    ):
        assert response.status_code == 200
        live.call(fan_out)
        _append(path, "fanned out\n")
        lines = response.iter_lines()
        assert next(lines) == "[us] fanned out"
        live.call(lambda store: set_attempt_phase(store, "adhoc-us", 1, Phase.SUCCEEDED))
        assert list(lines) == []
