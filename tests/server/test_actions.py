"""Trigger, suspend/resume and cancel."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import httpx
import pytest

from cronloop.api import TERMINAL_PHASES, Job, Phase
from cronloop.controllers.cronjob import CANCEL_ANNOTATION, GUARANTEE_ANNOTATION
from cronloop.controllers.objects import CRONJOB_LABEL, typed
from cronloop.server import CANCELLED_BY_USER, manual_run_name
from cronloop.store import Store
from tests.server.builders import T0, cronjob_body, job_body, set_job_status

API = "/apis/cronloop.dev/v1"


async def test_trigger_creates_an_owned_run_from_the_template(
    client: httpx.AsyncClient, store: Store
) -> None:
    cron = (await client.post(f"{API}/cronjobs", json=cronjob_body(suspend=True))).json()
    response = await client.post(f"{API}/cronjobs/nightly/trigger")
    assert response.status_code == 201
    run = response.json()
    name = f"nightly-manual-{int(T0.timestamp())}"
    assert run["metadata"]["name"] == name
    assert run["metadata"]["labels"] == {CRONJOB_LABEL: "nightly"}
    assert run["metadata"]["annotations"] == {GUARANTEE_ANNOTATION: "AtLeastOnce"}
    assert run["metadata"]["ownerReferences"] == [
        {"kind": "CronJob", "name": "nightly", "uid": cron["metadata"]["uid"]}
    ]
    assert run["status"]["cronJob"] == {"name": "nightly", "uid": cron["metadata"]["uid"]}
    assert run["spec"] == cron["spec"]["jobTemplate"]
    stored = await store.get("Job", name)
    assert stored.owner_uid == cron["metadata"]["uid"]
    assert typed(stored, Job).status.phase is Phase.PENDING


async def test_two_triggers_in_one_second_get_distinct_names(client: httpx.AsyncClient) -> None:
    await client.post(f"{API}/cronjobs", json=cronjob_body())
    first = (await client.post(f"{API}/cronjobs/nightly/trigger")).json()
    second = (await client.post(f"{API}/cronjobs/nightly/trigger")).json()
    assert second["metadata"]["name"] == first["metadata"]["name"] + "-2"


async def test_trigger_uses_the_clock(client: httpx.AsyncClient, clock: list[datetime]) -> None:
    await client.post(f"{API}/cronjobs", json=cronjob_body())
    clock[0] = T0 + timedelta(hours=1)
    run = (await client.post(f"{API}/cronjobs/nightly/trigger")).json()
    assert run["metadata"]["name"] == f"nightly-manual-{int(T0.timestamp()) + 3600}"


def test_manual_run_name_fits_a_label() -> None:
    long = "x" * 52
    name = manual_run_name(long, T0, 3)
    assert len(name) <= 63
    assert name.endswith(f"-manual-{int(T0.timestamp())}-3")
    assert manual_run_name("a-" + "b" * 48, T0).count("--") == 0


async def test_trigger_of_a_missing_cronjob_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{API}/cronjobs/ghost/trigger")
    assert response.status_code == 404
    assert response.json()["error"] == 'CronJob "ghost" not found'


async def test_suspend_and_resume_toggle_spec_suspend(client: httpx.AsyncClient) -> None:
    created = (await client.post(f"{API}/cronjobs", json=cronjob_body())).json()
    suspended = await client.post(f"{API}/cronjobs/nightly/suspend")
    assert suspended.status_code == 200
    assert suspended.json()["spec"]["suspend"] is True
    again = (await client.post(f"{API}/cronjobs/nightly/suspend")).json()
    assert again["metadata"]["resourceVersion"] == suspended.json()["metadata"]["resourceVersion"]
    resumed = (await client.post(f"{API}/cronjobs/nightly/resume")).json()
    assert resumed["spec"]["suspend"] is False
    assert resumed["metadata"]["generation"] == created["metadata"]["generation"] + 2


async def test_concurrent_suspend_and_apply_both_land(client: httpx.AsyncClient) -> None:
    await client.post(f"{API}/cronjobs", json=cronjob_body())
    # Both read the same version; the compare-and-set loser re-reads and retries.
    applied, suspended = await asyncio.gather(
        client.put(
            f"{API}/cronjobs/nightly",
            json=cronjob_body(schedule="*/5 * * * *", labels={"team": "ops"}),
        ),
        client.post(f"{API}/cronjobs/nightly/suspend"),
    )
    assert applied.status_code == 200
    assert suspended.status_code == 200
    final = (await client.get(f"{API}/cronjobs/nightly")).json()
    assert final["metadata"]["labels"] == {"team": "ops"}
    assert final["spec"]["schedule"] == "*/5 * * * *"


async def test_cancel_sets_the_annotation_once(client: httpx.AsyncClient) -> None:
    await client.post(f"{API}/jobs", json=job_body())
    response = await client.post(f"{API}/jobs/adhoc/cancel")
    assert response.status_code == 200
    assert response.json()["metadata"]["annotations"] == {CANCEL_ANNOTATION: CANCELLED_BY_USER}
    again = await client.post(f"{API}/jobs/adhoc/cancel")
    assert again.status_code == 200
    assert (
        again.json()["metadata"]["resourceVersion"]
        == (response.json()["metadata"]["resourceVersion"])
    )


async def test_cancel_of_a_cron_run_keeps_its_identity(client: httpx.AsyncClient) -> None:
    await client.post(f"{API}/cronjobs", json=cronjob_body())
    run = (await client.post(f"{API}/cronjobs/nightly/trigger")).json()
    name = run["metadata"]["name"]
    response = await client.post(f"{API}/jobs/{name}/cancel")
    assert response.status_code == 200
    annotations = response.json()["metadata"]["annotations"]
    assert annotations[CANCEL_ANNOTATION] == CANCELLED_BY_USER
    assert annotations[GUARANTEE_ANNOTATION] == "AtLeastOnce"


async def test_cancel_of_a_finished_job_is_409(client: httpx.AsyncClient, store: Store) -> None:
    await client.post(f"{API}/jobs", json=job_body())
    await set_job_status(store, "adhoc", phase=Phase.SUCCEEDED)
    response = await client.post(f"{API}/jobs/adhoc/cancel")
    assert response.status_code == 409
    assert response.json() == {"error": 'Job "adhoc" has already finished (Succeeded)'}


@pytest.mark.parametrize("phase", sorted(TERMINAL_PHASES, key=str))
async def test_cancel_of_a_job_in_any_terminal_phase_is_409(
    client: httpx.AsyncClient, store: Store, phase: Phase
) -> None:
    await client.post(f"{API}/jobs", json=job_body())
    await set_job_status(store, "adhoc", phase=phase)
    response = await client.post(f"{API}/jobs/adhoc/cancel")
    assert response.status_code == 409
    assert response.json() == {"error": f'Job "adhoc" has already finished ({phase.value})'}


async def test_cancel_of_a_job_its_cancel_already_ended_is_409(
    client: httpx.AsyncClient, store: Store
) -> None:
    await client.post(f"{API}/jobs", json=job_body())
    assert (await client.post(f"{API}/jobs/adhoc/cancel")).status_code == 200
    # What the Job controller then writes: the annotation stays, the phase is Cancelled.
    await set_job_status(store, "adhoc", phase=Phase.CANCELLED)
    response = await client.post(f"{API}/jobs/adhoc/cancel")
    assert response.status_code == 409
    assert response.json() == {"error": 'Job "adhoc" has already finished (Cancelled)'}
