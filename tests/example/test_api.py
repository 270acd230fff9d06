"""The example family's endpoint, ``POST /api/example/demo/``: what it enqueues, what it refuses,
and the whole path (request, record, worker, progress, result) on the real broker and worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from pytest_django.fixtures import Settings

from app.models import JobRecord, JobStatus, OutboxMessage
from tests.support import Broker, running_worker, wait_for

DEMO = "/api/example/demo/"

pytestmark = pytest.mark.usefixtures("development_http")


def user(name: str) -> User:
    return User.objects.create_user(name, password="pw-" + name)


def logged_in(who: User | None) -> Client:
    client = Client()
    if who is not None:
        client.force_login(who)
    return client


def worker(log_dir: Path) -> Any:
    """The settings fixture hides SETTINGS_MODULE, which running_worker passes on: name it."""
    return running_worker(log_dir=log_dir, env={"DJANGO_SETTINGS_MODULE": "config.settings"})


@pytest.mark.django_db
def test_the_demo_enqueues_a_tracked_count_to_owned_by_the_caller() -> None:
    alice = user("alice")
    response = logged_in(alice).post(DEMO, {"upto": "500", "seconds": "0.5"})
    assert response.status_code == 202
    body = response.json()
    assert body["status_url"] == f"/api/jobs/{body['id']}/"
    record = JobRecord.objects.get(id=body["id"])
    assert (record.task_name, record.status, record.owner) == (
        "tasks.example.count_to",
        JobStatus.QUEUED,
        alice,
    )
    assert record.payload == {"args": [], "kwargs": {"upto": 500, "seconds": 0.5}}
    assert OutboxMessage.objects.filter(task_id=record.id).exists()


@pytest.mark.django_db
def test_the_demo_takes_json_and_defaults() -> None:
    response = logged_in(None).post(DEMO, {"upto": 7}, content_type="application/json")
    record = JobRecord.objects.get(id=response.json()["id"])
    assert record.payload["kwargs"] == {"upto": 7, "seconds": 0.0}
    assert record.owner is None
    response = logged_in(None).post(DEMO)
    assert JobRecord.objects.get(id=response.json()["id"]).payload["kwargs"]["upto"] == 2_000_000


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"upto": "0"}, "upto: Input should be greater than or equal to 1, got '0'"),
        ({"upto": "lots"}, "upto: Input should be a valid integer, unable to parse string"),
        ({"upto": "20000000"}, "upto: Input should be less than or equal to 10000000"),
        ({"seconds": "61"}, "seconds: Input should be less than or equal to 60, got '61'"),
        ({"seconds": "-1"}, "seconds: Input should be greater than or equal to 0"),
        ({"seconds": "nan"}, "seconds: Input should be"),
    ],
)
def test_bad_demo_input_is_a_400_and_enqueues_nothing(data: dict[str, str], message: str) -> None:
    response = logged_in(None).post(DEMO, data)
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)
    assert not JobRecord.objects.exists()


@pytest.mark.django_db
def test_bad_demo_json_is_a_400() -> None:
    for body in ["{", "[1]", '{"upto": true}', '{"upto": 2.5}']:
        response = logged_in(None).post(DEMO, body, content_type="application/json")
        assert response.status_code == 400, body
    assert not JobRecord.objects.exists()


@pytest.mark.django_db
def test_a_logged_in_user_needs_the_csrf_token_an_anonymous_script_not() -> None:
    """django-ninja exempts its views from CSRF; app.api.session_csrf puts it back (review)."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user("alice"))
    response = client.post(DEMO, {"upto": 5}, content_type="application/json")
    assert response.status_code == 403 and "CSRF" in response.json()["error"]
    client.get("/admin/login/")  # its form sets the csrftoken cookie
    token = client.cookies["csrftoken"].value
    headers = {"X-CSRFToken": token}
    assert (
        client.post(DEMO, {"upto": 5}, content_type="application/json", headers=headers).status_code
        == 202
    )
    anonymous = Client(enforce_csrf_checks=True).post(
        DEMO, {"upto": 5}, content_type="application/json"
    )
    assert anonymous.status_code == 202


@pytest.mark.django_db
def test_the_demo_only_exists_in_debug(settings: Settings) -> None:
    settings.DEBUG = False
    response = logged_in(None).post(DEMO)
    assert response.status_code == 404
    assert response.json() == {"error": "the demo endpoint only exists with DJANGO_DEBUG=1"}
    assert not JobRecord.objects.exists()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_demo_job_runs_with_progress_to_its_result(broker: Broker, tmp_path: Path) -> None:
    client = logged_in(user("alice"))
    seen: list[tuple[str, int]] = []
    with worker(tmp_path):
        response = client.post(DEMO, {"upto": "2000", "seconds": "2.5"})
        assert response.status_code == 202
        status_url = response.json()["status_url"]

        def ended() -> dict[str, Any] | None:
            body: dict[str, Any] = client.get(status_url).json()
            seen.append((body["status"], body["progress"]))
            return body if body["final"] else None

        final = wait_for(ended, timeout=30, what="the demo job to end")
    assert final["status"] == "succeeded", final
    assert final["result"] == {"counted": 2000}
    assert final["progress"] == 100 and final["attempts"] == 1
    assert final["started_at"] and final["finished_at"]
    assert any(s == "started" and 0 < p < 100 for s, p in seen), seen


@pytest.mark.django_db
def test_the_demo_refuses_a_run_longer_than_a_minute(client: Client) -> None:
    response = client.post(DEMO, {"upto": 10_000_000, "seconds": 3600})
    assert response.status_code == 400
    assert "seconds: Input should be less than or equal to 60" in response.json()["error"]
    assert not JobRecord.objects.exists()
