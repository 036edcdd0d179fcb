"""The sub-job a one-target run keeps in its Job, served as a SubJob: list, get, logs, watch.

The store holds no SubJob for such a run (see cronloop.controllers.subjobs); the API shows
one made from the Job, the same as a stored one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cronloop.api import Phase, parse_resource
from cronloop.controllers.objects import JOB_LABEL, to_stored
from cronloop.store import Store
from tests.server.builders import add_subjob, job_body, keep_subjob, set_job_status
from tests.server.live import LiveServer

API = "/apis/cronloop.dev/v1"


async def _one_target(client: httpx.AsyncClient, store: Store, name: str = "solo") -> None:
    response = await client.post(f"{API}/jobs", json=job_body(name, targets=["eu"]))
    assert response.status_code == 201


async def test_a_kept_subjob_is_listed_and_got_like_a_stored_one(
    client: httpx.AsyncClient, store: Store
) -> None:
    await _one_target(client, store)
    job = await keep_subjob(store, await store.get("Job", "solo"), [(Phase.RUNNING, None)])
    # And a two-target run with stored sub-jobs, which the listing keeps showing.
    assert (await client.post(f"{API}/jobs", json=job_body("pair"))).status_code == 201
    await add_subjob(store, await store.get("Job", "pair"), "eu")
    assert (await store.list("SubJob", owner_uid=job.uid)).items == []  # nothing stored

    listed = (await client.get(f"{API}/subjobs")).json()["items"]
    assert [s["metadata"]["name"] for s in listed] == ["pair-eu", "solo-eu"]
    (by_owner,) = (await client.get(f"{API}/subjobs", params={"owner": job.uid})).json()["items"]
    (by_label,) = (
        await client.get(f"{API}/subjobs", params={"labelSelector": f"{JOB_LABEL}=solo"})
    ).json()["items"]
    got = (await client.get(f"{API}/subjobs/solo-eu")).json()
    assert by_owner == by_label == got
    assert got["kind"] == "SubJob"
    assert got["metadata"]["labels"] == {JOB_LABEL: "solo"}
    assert got["metadata"]["resourceVersion"] == job.resource_version
    assert got["spec"]["job"] == {"name": "solo", "uid": job.uid}
    assert got["spec"]["target"] == "eu"
    assert got["status"]["phase"] == "Running"
    assert [a["phase"] for a in got["status"]["attempts"]] == ["Running"]
    page = (await client.get(f"{API}/subjobs", params={"limit": 1})).json()
    assert [s["metadata"]["name"] for s in page["items"]] == ["pair-eu"]
    rest = await client.get(f"{API}/subjobs", params={"continue": page["metadata"]["continue"]})
    assert [s["metadata"]["name"] for s in rest.json()["items"]] == ["solo-eu"]


async def test_a_missing_subjob_is_404_even_when_a_job_prefix_exists(
    client: httpx.AsyncClient, store: Store
) -> None:
    await _one_target(client, store)
    await keep_subjob(store, await store.get("Job", "solo"), [])
    for name in ("solo-us", "solo", "sol-eu"):
        response = await client.get(f"{API}/subjobs/{name}")
        assert response.status_code == 404, name
        assert response.json() == {"error": f'SubJob "{name}" not found'}


async def test_a_kept_subjobs_log_is_served(
    client: httpx.AsyncClient, store: Store, log_dir: Path
) -> None:
    await _one_target(client, store)
    path = log_dir / "solo" / "solo-eu.1.main.log"
    path.parent.mkdir(parents=True)
    path.write_text("kept\n")
    await keep_subjob(store, await store.get("Job", "solo"), [(Phase.SUCCEEDED, path)])
    response = await client.get(f"{API}/jobs/solo/logs")
    assert response.status_code == 200
    assert response.text == "[eu] kept\n"
    response = await client.get(f"{API}/jobs/solo/logs", params={"target": "eu"})
    assert response.text == "kept\n"


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(tmp_path) as server:
        yield server


def _events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if line:
            yield json.loads(line)


async def _create_and_keep(store: Store) -> None:
    await store.create(to_stored(parse_resource(job_body("solo", targets=["eu"]))))
    await keep_subjob(store, await store.get("Job", "solo"), [(Phase.RUNNING, None)])
    await set_job_status(store, "solo", phase=Phase.RUNNING)


def test_watching_subjobs_shows_a_kept_subjobs_changes(live: LiveServer) -> None:
    live.call(_create_and_keep)
    with (
        httpx.Client(
            base_url=live.url,
            headers={"Authorization": f"Bearer {live.token}"},
            timeout=httpx.Timeout(10.0),
        ) as http,
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
