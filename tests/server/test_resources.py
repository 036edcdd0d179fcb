"""List, get, create, apply and delete over HTTP, with errors that name the field."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import yaml

from cronloop.controllers.cronjob import CANCEL_ANNOTATION
from cronloop.controllers.objects import CRONJOB_LABEL
from cronloop.store import Store
from tests.server.builders import add_subjob, cronjob_body, job_body

API = "/apis/cronloop.dev/v1"


async def test_create_then_get_returns_the_typed_resource(client: httpx.AsyncClient) -> None:
    created = await client.post(f"{API}/cronjobs", json=cronjob_body())
    assert created.status_code == 201
    body = created.json()
    assert body["kind"] == "CronJob"
    assert body["metadata"]["uid"]
    assert body["metadata"]["resourceVersion"] >= 1
    assert body["spec"]["jobTemplate"]["targets"] == {"names": ["eu", "us"]}
    fetched = await client.get(f"{API}/cronjobs/nightly")
    assert fetched.status_code == 200
    assert fetched.json() == body


async def test_create_accepts_yaml(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{API}/jobs",
        content=yaml.safe_dump(job_body("from-yaml")),
        headers={"Content-Type": "application/yaml"},
    )
    assert response.status_code == 201
    assert response.json()["metadata"]["name"] == "from-yaml"


async def test_create_twice_is_409(client: httpx.AsyncClient) -> None:
    assert (await client.post(f"{API}/jobs", json=job_body())).status_code == 201
    again = await client.post(f"{API}/jobs", json=job_body())
    assert again.status_code == 409
    assert again.json() == {"error": 'Job "adhoc" already exists'}


async def test_get_missing_is_404_naming_the_object(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{API}/jobs/ghost")
    assert response.status_code == 404
    assert response.json() == {"error": 'Job "ghost" not found'}


async def test_unknown_resource_type_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{API}/pods")
    assert response.status_code == 404
    assert "unknown resource type 'pods'" in response.json()["error"]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b["spec"].update(schedule="61 * * * *"), "spec.schedule"),
        (lambda b: b["metadata"].update(name="Not_Valid"), "metadata.name"),
        (lambda b: b["spec"].update(timeZone="Mars/Base"), "spec.timeZone"),
        (lambda b: b["spec"]["jobTemplate"].pop("main"), "spec.jobTemplate.main"),
        (lambda b: b["spec"].update(sheduleTypo="x"), "spec.sheduleTypo: unknown field"),
        (
            lambda b: b["spec"]["jobTemplate"]["main"].update(argv=[], command="x"),
            "spec.jobTemplate.main",
        ),
    ],
)
async def test_validation_errors_are_422_naming_the_field(
    client: httpx.AsyncClient, mutate: Any, field: str
) -> None:
    body = cronjob_body()
    mutate(body)
    response = await client.post(f"{API}/cronjobs", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error.startswith("request body: CronJob")
    assert field in error


async def test_body_of_another_kind_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{API}/cronjobs", json=job_body())
    assert response.status_code == 422
    assert response.json()["error"] == "request body: kind: expected CronJob here, got Job"


async def test_invalid_json_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{API}/jobs", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"].startswith("request body: invalid JSON")


async def test_status_in_a_body_is_ignored(client: httpx.AsyncClient) -> None:
    body = job_body()
    body["status"] = {"phase": "Succeeded", "reason": "forged"}
    created = (await client.post(f"{API}/jobs", json=body)).json()
    assert created["status"]["phase"] == "Pending"
    assert "reason" not in created["status"]
    applied = await client.put(f"{API}/jobs/adhoc", json=body)
    assert applied.json()["status"]["phase"] == "Pending"


async def test_subjobs_cannot_be_written(client: httpx.AsyncClient, store: Store) -> None:
    job = (await client.post(f"{API}/jobs", json=job_body())).json()
    stored_job = await store.get("Job", job["metadata"]["name"])
    await add_subjob(store, stored_job, "eu")
    sub = (await client.get(f"{API}/subjobs/adhoc-eu")).json()
    for response in (
        await client.post(f"{API}/subjobs", json=sub),
        await client.put(f"{API}/subjobs/adhoc-eu", json=sub),
        await client.delete(f"{API}/subjobs/adhoc-eu"),
    ):
        assert response.status_code == 403
        assert "created and written by the Job controller" in response.json()["error"]
    assert (await client.get(f"{API}/subjobs/adhoc-eu")).status_code == 200


async def test_apply_creates_then_is_idempotent(client: httpx.AsyncClient) -> None:
    first = await client.put(f"{API}/cronjobs/nightly", json=cronjob_body())
    assert first.status_code == 201
    assert first.headers["cronloop-apply"] == "created"
    second = await client.put(f"{API}/cronjobs/nightly", json=cronjob_body())
    assert second.status_code == 200
    assert second.headers["cronloop-apply"] == "unchanged"
    assert second.json() == first.json()


async def test_apply_updates_spec_and_bumps_generation(client: httpx.AsyncClient) -> None:
    first = (await client.put(f"{API}/cronjobs/nightly", json=cronjob_body())).json()
    changed = await client.put(f"{API}/cronjobs/nightly", json=cronjob_body(schedule="*/5 * * * *"))
    assert changed.status_code == 200
    assert changed.headers["cronloop-apply"] == "configured"
    body = changed.json()
    assert body["spec"]["schedule"] == "*/5 * * * *"
    assert body["metadata"]["generation"] == first["metadata"]["generation"] + 1
    assert body["metadata"]["uid"] == first["metadata"]["uid"]


async def test_apply_name_must_match_the_url(client: httpx.AsyncClient) -> None:
    response = await client.put(f"{API}/cronjobs/other", json=cronjob_body())
    assert response.status_code == 422
    assert (
        "metadata.name: 'nightly' does not match the name in the URL 'other'"
        in (response.json()["error"])
    )


async def test_apply_of_a_changed_job_spec_is_refused(client: httpx.AsyncClient) -> None:
    assert (await client.put(f"{API}/jobs/adhoc", json=job_body())).status_code == 201
    response = await client.put(f"{API}/jobs/adhoc", json=job_body(targets=["ap"]))
    assert response.status_code == 422
    assert "spec: a Job's spec cannot change once created" in response.json()["error"]
    relabel = await client.put(f"{API}/jobs/adhoc", json=job_body(labels={"team": "data"}))
    assert relabel.status_code == 200
    assert relabel.json()["metadata"]["labels"] == {"team": "data"}


async def test_apply_keeps_system_labels_and_annotations(client: httpx.AsyncClient) -> None:
    await client.post(f"{API}/cronjobs", json=cronjob_body())
    run = (await client.post(f"{API}/cronjobs/nightly/trigger")).json()
    name = run["metadata"]["name"]
    await client.post(f"{API}/jobs/{name}/cancel")
    body = job_body(name, labels={"team": "ops"})
    body["spec"] = run["spec"]
    applied = await client.put(f"{API}/jobs/{name}", json=body)
    assert applied.status_code == 200, applied.text
    metadata = applied.json()["metadata"]
    assert metadata["labels"] == {CRONJOB_LABEL: "nightly", "team": "ops"}
    assert CANCEL_ANNOTATION in metadata["annotations"]
    assert metadata["ownerReferences"][0]["name"] == "nightly"


async def test_list_filters_by_label_selector_and_owner(client: httpx.AsyncClient) -> None:
    await client.post(f"{API}/jobs", json=job_body("a", labels={"team": "ops", "tier": "1"}))
    await client.post(f"{API}/jobs", json=job_body("b", labels={"team": "ops"}))
    await client.post(f"{API}/jobs", json=job_body("c", labels={"team": "data"}))
    cron = (await client.post(f"{API}/cronjobs", json=cronjob_body())).json()
    await client.post(f"{API}/cronjobs/nightly/trigger")

    def names(response: httpx.Response) -> list[str]:
        return [i["metadata"]["name"] for i in response.json()["items"]]

    assert names(await client.get(f"{API}/jobs", params={"labelSelector": "team=ops"})) == [
        "a",
        "b",
    ]
    selected = await client.get(f"{API}/jobs", params={"labelSelector": "team=ops,tier=1"})
    assert names(selected) == ["a"]
    owned = await client.get(f"{API}/jobs", params={"owner": cron["metadata"]["uid"]})
    assert len(names(owned)) == 1
    assert names(owned)[0].startswith("nightly-manual-")
    listed = (await client.get(f"{API}/jobs")).json()
    assert listed["kind"] == "JobList"
    assert listed["metadata"]["resourceVersion"] >= 5


async def test_list_pages_with_limit_and_continue(client: httpx.AsyncClient) -> None:
    for name in ("a", "b", "c"):
        await client.post(f"{API}/jobs", json=job_body(name))
    first = (await client.get(f"{API}/jobs", params={"limit": 2})).json()
    assert [i["metadata"]["name"] for i in first["items"]] == ["a", "b"]
    assert first["metadata"]["continue"] == "b"
    rest = (await client.get(f"{API}/jobs", params={"limit": 2, "continue": "b"})).json()
    assert [i["metadata"]["name"] for i in rest["items"]] == ["c"]
    assert "continue" not in rest["metadata"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"labelSelector": "team"}, "labelSelector: 'team' is not of the form key=value"),
        ({"labelSelector": "bad key=x"}, "labelSelector: label key 'bad key'"),
        ({"limit": "0"}, "limit: must be greater than or equal to 1"),
        ({"limit": "many"}, "limit: must be a valid integer"),
    ],
)
async def test_bad_list_parameters_are_422(
    client: httpx.AsyncClient, params: dict[str, str], message: str
) -> None:
    response = await client.get(f"{API}/jobs", params=params)
    assert response.status_code == 422
    assert message in response.json()["error"]


async def test_delete_cascades_to_owned_objects(client: httpx.AsyncClient, store: Store) -> None:
    await client.post(f"{API}/cronjobs", json=cronjob_body())
    run = (await client.post(f"{API}/cronjobs/nightly/trigger")).json()
    await add_subjob(store, await store.get("Job", run["metadata"]["name"]), "eu")
    deleted = await client.delete(f"{API}/cronjobs/nightly")
    assert deleted.status_code == 200
    assert deleted.json()["metadata"]["name"] == "nightly"
    assert (await client.get(f"{API}/jobs")).json()["items"] == []
    assert (await client.get(f"{API}/subjobs")).json()["items"] == []
    again = await client.delete(f"{API}/cronjobs/nightly")
    assert again.status_code == 404
