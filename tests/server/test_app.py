"""Status, metrics, and secrets: env values never leave the server unmasked."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from cronloop.server import REDACTED, create_app, redact
from cronloop.store import Store
from tests.server.builders import add_subjob, cronjob_body, job_body
from tests.server.conftest import TOKEN

API = "/apis/cronloop.dev/v1"
SECRET = "hunter2-very-secret"


async def test_status_reports_the_manager_and_revision(client: httpx.AsyncClient) -> None:
    await client.post(f"{API}/jobs", json=job_body())
    body = (await client.get("/status")).json()
    assert body["manager"] == {"controllers": ["cronjob", "job"], "leader": True}
    assert body["revision"] == 1


async def test_status_without_a_manager(store: Store, tmp_path: Path) -> None:
    app = create_app(store, token=TOKEN, log_dir=tmp_path)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://t",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as http:
        body = (await http.get("/status")).json()
    assert "manager" not in body
    assert body["revision"] == 0


async def test_metrics_expose_the_given_registry(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "cronloop_test_events_total 3.0" in response.text


def test_create_app_refuses_a_bad_poll_interval(store: Store, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        create_app(store, token=TOKEN, log_dir=tmp_path, poll_interval=0)


async def test_env_values_are_masked_everywhere(client: httpx.AsyncClient, store: Store) -> None:
    env = {"DB_PASSWORD": SECRET}
    responses = [
        await client.post(f"{API}/cronjobs", json=cronjob_body(env=env)),
        await client.post(f"{API}/jobs", json=job_body(env=env)),
        await client.post(f"{API}/cronjobs/nightly/trigger"),
    ]
    await add_subjob(store, await store.get("Job", "adhoc"), "eu")
    responses += [
        await client.get(f"{API}/cronjobs"),
        await client.get(f"{API}/jobs"),
        await client.get(f"{API}/subjobs/adhoc-eu"),
        await client.post(f"{API}/cronjobs/nightly/suspend"),
        await client.delete(f"{API}/jobs/adhoc"),
    ]
    for response in responses:
        assert response.is_success, response.text
        assert SECRET not in response.text
        assert '"DB_PASSWORD":"***"' in response.text.replace(" ", "")
    # The secret itself is stored and runs with the job.
    assert (await store.get("CronJob", "nightly")).spec["jobTemplate"]["main"]["env"] == env


async def test_apply_of_masked_output_keeps_the_secret(
    client: httpx.AsyncClient, store: Store
) -> None:
    shown = (await client.post(f"{API}/cronjobs", json=cronjob_body(env={"K": SECRET}))).json()
    shown["spec"]["schedule"] = "*/10 * * * *"
    response = await client.put(f"{API}/cronjobs/nightly", json=shown)
    assert response.status_code == 200, response.text
    stored = await store.get("CronJob", "nightly")
    assert stored.spec["jobTemplate"]["main"]["env"] == {"K": SECRET}
    assert stored.spec["schedule"] == "*/10 * * * *"


async def test_masked_value_without_a_stored_secret_is_422(client: httpx.AsyncClient) -> None:
    created = await client.post(f"{API}/jobs", json=job_body(env={"K": REDACTED}))
    assert created.status_code == 422
    assert "spec.main.env.K: value is '***' (a masked secret)" in created.json()["error"]
    await client.post(f"{API}/cronjobs", json=cronjob_body(env={"K": SECRET}))
    body = cronjob_body(env={"K": REDACTED, "NEW": REDACTED})
    applied = await client.put(f"{API}/cronjobs/nightly", json=body)
    assert applied.status_code == 422
    assert "spec.jobTemplate.main.env.NEW" in applied.json()["error"]


def test_redact_leaves_its_input_alone() -> None:
    body = job_body(env={"K": SECRET})
    shown = redact(body)
    assert shown["spec"]["main"]["env"] == {"K": REDACTED}
    assert body["spec"]["main"]["env"] == {"K": SECRET}


async def test_token_and_secrets_are_not_logged(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await client.post(f"{API}/jobs", json=job_body(env={"K": SECRET}))
    await client.get(f"{API}/jobs", headers={"Authorization": "Bearer wrong"})
    for record in caplog.records:
        text = record.getMessage()
        assert TOKEN not in text
        assert SECRET not in text
