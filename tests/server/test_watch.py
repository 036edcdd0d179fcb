"""The NDJSON change feed: live events from a list's revision, kinds, replay and 410 Gone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cronloop.api import Phase, parse_resource
from cronloop.controllers.objects import to_stored
from cronloop.store import Store
from tests.server.builders import cronjob_body, job_body, keep_subjob, set_job_status
from tests.server.live import LiveServer

API = "/apis/cronloop.dev/v1"


async def test_unknown_kind_is_422(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{API}/watch", params={"kinds": "Job,Pod"})
    assert response.status_code == 422
    assert response.json()["error"].startswith("kinds: unknown kind 'Pod'")


async def test_negative_revision_is_422(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{API}/watch", params={"from": -1})
    assert response.status_code == 422
    assert "from:" in response.json()["error"]


async def test_compacted_history_is_410_gone(client: httpx.AsyncClient, store: Store) -> None:
    for name in ("a", "b", "c"):
        await client.post(f"{API}/jobs", json=job_body(name))
    await store.compact(3)
    response = await client.get(f"{API}/watch", params={"from": 0})
    assert response.status_code == 410
    assert "list again" in response.json()["error"]


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(tmp_path) as server:
        yield server


def _events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if line:
            yield json.loads(line)


def _http(live: LiveServer) -> httpx.Client:
    return httpx.Client(
        base_url=live.url,
        headers={"Authorization": f"Bearer {live.token}"},
        timeout=httpx.Timeout(10.0),
    )


async def _create(store: Store, body: dict[str, Any]) -> int:
    return (await store.create(to_stored(parse_resource(body)))).resource_version


def test_watch_from_a_list_revision_sees_later_changes(live: LiveServer) -> None:
    live.call(lambda store: _create(store, job_body("before")))
    with _http(live) as http:
        revision = http.get(f"{API}/jobs").json()["metadata"]["resourceVersion"]
        # Written after the list and before the watch starts: still delivered, exactly once.
        live.call(lambda store: _create(store, job_body("between", env={"K": "secret-v"})))
        with http.stream(
            "GET", f"{API}/watch", params={"kinds": "Job", "from": revision}
        ) as response:
            assert response.headers["content-type"] == "application/x-ndjson"
            events = _events(response)
            first = next(events)
            assert first["type"] == "ADDED"
            assert first["object"]["metadata"]["name"] == "between"
            assert first["object"]["spec"]["main"]["env"] == {"K": "***"}
            assert first["revision"] == revision + 1
            live.call(lambda store: store.delete("Job", "before"))
            second = next(events)
            assert (second["type"], second["object"]["metadata"]["name"]) == ("DELETED", "before")
            assert second["revision"] > first["revision"]


def test_watch_filters_kinds_and_replays_history(live: LiveServer) -> None:
    live.call(lambda store: _create(store, cronjob_body()))
    live.call(lambda store: _create(store, job_body("one")))
    live.call(lambda store: _create(store, job_body("two")))
    with (
        _http(live) as http,
        http.stream("GET", f"{API}/watch", params={"kinds": "Job", "from": 0}) as response,
    ):
        events = _events(response)
        replayed = [next(events), next(events)]
        assert [e["object"]["metadata"]["name"] for e in replayed] == ["one", "two"]
        assert all(e["object"]["kind"] == "Job" for e in replayed)


def test_watch_without_from_starts_now(live: LiveServer) -> None:
    live.call(lambda store: _create(store, job_body("old")))
    with (
        _http(live) as http,
        http.stream("GET", f"{API}/watch") as response,
    ):
        assert live.watch_requested.wait(10)
        events = _events(response)
        # The watch starts at the revision current when the server began iterating; a write
        # made after the response headers arrived is certainly after that point.
        live.call(lambda store: _create(store, cronjob_body("fresh")))
        event = next(events)
        assert event["object"]["metadata"]["name"] == "fresh"
        assert event["object"]["kind"] == "CronJob"


async def _create_and_keep(store: Store) -> None:
    await store.create(to_stored(parse_resource(job_body("solo", targets=["eu"]))))
    await keep_subjob(store, await store.get("Job", "solo"), [(Phase.RUNNING, None)])
    await set_job_status(store, "solo", phase=Phase.RUNNING)


def test_watching_subjobs_shows_a_kept_subjobs_changes(live: LiveServer) -> None:
    live.call(_create_and_keep)
    with (
        _http(live) as http,
        http.stream("GET", f"{API}/watch", params={"kinds": "SubJob", "from": 0}) as response,
    ):
        events = _events(response)
        # Created without one (not fanned out yet), then kept, then the run's own change.
        first, second = next(events), next(events)
        assert [e["type"] for e in (first, second)] == ["MODIFIED", "MODIFIED"]
        assert all(e["object"]["kind"] == "SubJob" for e in (first, second))
        assert first["object"]["metadata"]["name"] == "solo-eu"
        assert first["object"]["status"]["phase"] == "Running"
        assert second["revision"] > first["revision"]
