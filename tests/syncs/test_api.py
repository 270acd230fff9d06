"""``POST /api/syncs/``: a known sync is enqueued (202), an unknown one is a 400 that enqueues
nothing; the family's schedule names a task that exists."""

from __future__ import annotations

import pytest
from django.test import Client

from app.models import JobRecord, JobStatus, OutboxMessage
from tests.support import Broker

pytestmark = [pytest.mark.usefixtures("development_http"), pytest.mark.django_db(transaction=True)]


def test_a_named_sync_is_enqueued_as_a_tracked_job(broker: Broker) -> None:
    answer = Client().post("/api/syncs/", {"sync": "contacts"}, content_type="application/json")
    assert answer.status_code == 202, answer.content
    body = answer.json()
    assert body["status_url"] == f"/api/jobs/{body['id']}/"
    record = JobRecord.objects.get(id=body["id"])
    assert (record.task_name, record.status, record.queue) == (
        "tasks.syncs.run",
        JobStatus.QUEUED,
        "api",
    )
    assert broker.depth("api") == 1


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"sync": "nope"}, "sync: no sync named 'nope' (declared: contacts)"),
        ({}, "sync"),
        ({"sync": "contacts", "extra": 1}, "extra"),
    ],
)
def test_an_unknown_sync_is_a_400_and_nothing_is_enqueued(
    broker: Broker, body: dict[str, object], named: str
) -> None:
    answer = Client().post("/api/syncs/", body, content_type="application/json")
    assert answer.status_code == 400
    assert named in answer.json()["error"]
    assert not JobRecord.objects.exists() and not OutboxMessage.objects.exists()
    assert broker.depth("api") == 0


def test_the_schedule_runs_a_declared_sync() -> None:
    from config.celery import app
    from tasks.syncs.registry import SYNCS
    from tasks.syncs.tasks import SCHEDULE

    for entry in SCHEDULE.values():
        assert entry["task"] in app.tasks
        assert entry["kwargs"]["name"] in SYNCS
