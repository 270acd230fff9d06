"""Syncs on real worker processes (``api`` queue, threads pool) against a real local API that
paginates, fails and limits: the issue's "What must be shown"."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import transaction

from app.models import FINAL_STATUSES, JobRecord, JobStatus
from tasks.syncs.models import Contact
from tasks.syncs.services import sync_start
from tests.support import (
    Broker,
    Worker,
    free_port,
    job_ended,
    running_beat,
    running_worker,
    wait_for,
)
from tests.syncs.remote import RemoteApi, remote_api

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@contextmanager
def sync_worker(api: RemoteApi, log_dir: Path, *, rate: float = 0) -> Iterator[Worker]:
    with running_worker(
        queues_="api",
        pool="threads",
        concurrency=4,
        log_dir=log_dir,
        env={
            "DJANGO_SETTINGS_MODULE": "tests.syncs.settings",
            "TEST_SYNCS_REMOTES": json.dumps({"contacts": api.url}),
            "TEST_SYNCS_RATES": json.dumps({"contacts": rate}),
        },
    ) as worker:
        yield worker


@pytest.fixture(scope="module")
def module_api() -> Iterator[RemoteApi]:
    with remote_api(port=free_port()) as api:
        yield api


@pytest.fixture
def api(module_api: RemoteApi) -> RemoteApi:
    module_api.script.clear()
    module_api.hits.clear()
    module_api.pages, module_api.version = 200, 1
    return module_api


@pytest.fixture(scope="module")
def worker(
    django_db_setup: None, module_api: RemoteApi, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    with sync_worker(module_api, tmp_path_factory.mktemp("syncs")) as worker:
        yield worker


def start() -> str:
    with transaction.atomic():
        return sync_start(name="contacts")


def test_200_pages_are_stored_once_and_a_second_run_changes_nothing(
    broker: Broker, api: RemoteApi, worker: Worker
) -> None:
    first = job_ended(start())
    assert first.status == JobStatus.SUCCEEDED, first.error
    assert first.result == {
        "pages": 200, "created": 2000, "updated": 0, "unchanged": 0, "failed": 0
    }  # fmt: skip
    assert Contact.objects.count() == 2000
    assert api.pages_served() == list(range(1, 201))
    second = job_ended(start())
    assert second.result == {
        "pages": 200, "created": 0, "updated": 0, "unchanged": 2000, "failed": 0
    }  # fmt: skip
    assert (second.progress, second.progress_message) == (100, "200 pages, 2000 records")


def test_a_malformed_page_kills_the_run_naming_it_and_the_next_run_resumes_there(
    broker: Broker, api: RemoteApi, worker: Worker
) -> None:
    api.pages = 30
    api.script[17] = [(200, {}, b'{"data": [{"id": 1, "name": "no email"}], "total_pages": 30}')]
    record = job_ended(start())
    assert record.status == JobStatus.DEAD and record.attempts == 1
    assert "PageInvalid: sync contacts, page 17: record 0: missing field 'email'" in record.error
    assert Contact.objects.count() == 160
    assert broker.depth("api.dead") == 1
    resumed = job_ended(start())
    assert resumed.status == JobStatus.SUCCEEDED, resumed.error
    assert api.pages_served() == [*range(1, 18), *range(17, 31)]
    assert (resumed.result or {})["created"] == 140 and Contact.objects.count() == 300


def test_beat_runs_the_familys_scheduled_sync_and_a_run_due_meanwhile_writes_nothing_twice(
    broker: Broker, api: RemoteApi, worker: Worker, tmp_path: Path
) -> None:
    """The family's SCHEDULE, installed by ``manage.py sync_schedule`` and switched to every
    second in the admin, is sent by a real beat and run by the worker: the first run stores
    every record, the later ones (some due while one still ran) find them unchanged or are
    refused, and none creates a record twice."""
    from django.core.management import call_command
    from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

    api.pages = 20
    call_command("sync_schedule")
    PeriodicTask.objects.exclude(task="tasks.syncs.run").update(enabled=False)
    every_second, _ = IntervalSchedule.objects.get_or_create(
        every=1, period=IntervalSchedule.SECONDS
    )
    scheduled = PeriodicTask.objects.get(task="tasks.syncs.run")
    scheduled.crontab, scheduled.interval = None, every_second
    scheduled.save()  # as the admin's form saves it
    PeriodicTasks.update_changed()
    runs = JobRecord.objects.filter(task_name="tasks.syncs.run", status__in=FINAL_STATUSES)
    with running_beat(log_dir=tmp_path):
        wait_for(lambda: runs.count() >= 3, timeout=60, what="three scheduled runs to end")
    assert {run.status for run in runs} == {JobStatus.SUCCEEDED}, [r.error for r in runs]
    results = [run.result or {} for run in runs.order_by("finished_at")]
    assert results[0]["created"] == 200
    assert sum(result.get("created", 0) for result in results) == 200, results
    assert all("refused" in result or result["unchanged"] == 200 for result in results[1:]), results
    assert Contact.objects.count() == 200
