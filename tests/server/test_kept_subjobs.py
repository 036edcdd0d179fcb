"""The sub-job a one-target run keeps in its Job, served as a SubJob: list, get and logs
(its watch is in test_watch.py).

The store holds no SubJob for such a run (see cronloop.controllers.subjobs); the API shows
one made from the Job, the same as a stored one.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from cronloop.api import Phase
from cronloop.controllers.objects import JOB_LABEL
from cronloop.store import Store
from tests.server.builders import add_subjob, job_body, keep_subjob

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
