"""``POST /api/exports/``: a declared export is enqueued (202) for staff; a bad name, format,
filter or filter value is a 400 naming it, another user a 403, and neither enqueues anything."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.models import JobRecord, JobStatus, OutboxMessage

pytestmark = [pytest.mark.usefixtures("development_http")]


@pytest.fixture
def staff(db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create_user("ops", "ops@example.com", is_staff=True))
    return client


def post(client: Client, body: Any) -> Any:
    return client.post("/api/exports/", body, content_type="application/json")


def nothing_enqueued() -> bool:
    return not JobRecord.objects.exists() and not OutboxMessage.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_declared_export_is_enqueued_on_the_exports_queue(staff: Client, broker: Any) -> None:
    body = {"export": "jobs", "format": "xlsx", "gzip": True,
            "filters": {"status": "dead", "since": "2026-11-01T00:00:00Z"}}  # fmt: skip
    answer = post(staff, body)
    assert answer.status_code == 202, answer.content
    job = answer.json()
    assert job["status_url"] == f"/api/jobs/{job['id']}/"
    record = JobRecord.objects.get(id=job["id"])
    assert (record.task_name, record.status, record.queue) == (
        "tasks.exports.run",
        JobStatus.QUEUED,
        "exports",
    )
    assert record.owner is not None and record.owner.username == "ops"
    assert broker.depth("exports") == 1


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"export": "nope", "format": "csv"}, "export: no export is named 'nope'"),
        ({"export": "jobs", "format": "pdf"}, "format"),
        ({"export": "jobs"}, "format"),
        ({"export": "jobs", "format": "csv", "filters": {"owner": 1}}, "filters.owner: export"),
        ({"export": "jobs", "format": "csv", "filters": {"since": "yesterday"}}, "filters.since"),
        ({"export": "jobs", "format": "csv", "filters": {"statuses": []}}, "filters.statuses"),
        ({"export": "jobs", "format": "csv", "filters": {"statuses": [1]}}, "filters.statuses[0]"),
        ({"export": "job_outcomes_by_day", "format": "csv", "filters": {"since": 5}}, "since"),
        ({"export": "jobs", "format": "csv", "sql": "SELECT 1"}, "sql"),
        ({"export": "jobs", "format": "csv", "gzip": "maybe"}, "gzip"),
    ],
)
@pytest.mark.django_db
def test_a_bad_request_is_a_400_naming_what_is_wrong(
    staff: Client, body: dict[str, Any], named: str
) -> None:
    answer = post(staff, body)
    assert answer.status_code == 400, answer.content
    assert named in answer.json()["error"]
    assert nothing_enqueued()


@pytest.mark.django_db
def test_exports_are_for_staff_by_default() -> None:
    anonymous = Client()
    user = Client()
    user.force_login(User.objects.create_user("someone"))
    for client in (anonymous, user):
        answer = post(client, {"export": "jobs", "format": "csv"})
        assert answer.status_code == 403, answer.content
        assert "not open to this user" in answer.json()["error"]
    assert nothing_enqueued()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
filter_values = st.dictionaries(
    st.sampled_from(["status", "statuses", "task", "since", "until", "other"]),
    json_values,
    max_size=4,
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"export": st.sampled_from(["jobs", "job_outcomes_by_day", "nope"]) | st.text(max_size=8)},
        optional={
            "format": st.sampled_from(["csv", "xlsx", "jsonl"]) | st.text(max_size=5),
            "gzip": st.booleans() | json_values,
            "filters": filter_values | json_values,
        },
    ),
)


@pytest.mark.django_db
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies)
def test_any_body_is_enqueued_once_or_refused_with_nothing_enqueued(
    staff: Client, body: Any
) -> None:
    before = JobRecord.objects.count()
    answer = post(staff, body)
    assert answer.status_code in (202, 400), answer.content
    enqueued = JobRecord.objects.count() - before
    if answer.status_code == 202:
        assert enqueued == 1
        assert JobRecord.objects.filter(
            id=answer.json()["id"], task_name="tasks.exports.run"
        ).exists()
    else:
        assert enqueued == 0 and answer.json()["error"]
