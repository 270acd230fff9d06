"""Syncs through a killed worker, and two workers sharing one rate limit: each test starts its
own workers (no other worker may take the job on the queue) against its own local API."""

from __future__ import annotations

import email.utils
import itertools
import os
import re
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.db import transaction

from app.enqueue import job_enqueue
from app.models import JobStatus
from tasks.syncs.models import Contact, SyncPart, SyncState
from tests.support import Broker, job_ended
from tests.syncs.remote import Answer, RemoteApi, remote_api
from tests.syncs.test_worker import start, sync_worker

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_worker_killed_at_page_120_is_resumed_there_by_the_redelivered_job(
    broker: Broker, tmp_path: Path
) -> None:
    with remote_api() as api:
        with sync_worker(api, tmp_path) as first:

            def kill() -> None:
                os.killpg(first.process.pid, signal.SIGKILL)

            api.script[120] = [kill]
            job_id = start()
            first.process.wait(60)
        pages_before = [hit.page for hit in api.hits]
        assert pages_before == list(range(1, 121))  # the kill came with the request for page 120
        assert SyncState.objects.get().cursor == 120
        with sync_worker(api, tmp_path):
            record = job_ended(job_id)
    assert record.status == JobStatus.SUCCEEDED, record.error
    after = [hit.page for hit in api.hits][len(pages_before) :]
    assert after == list(range(120, 201))  # resumed at 120, not at 1
    assert record.result == {
        "pages": 200, "created": 2000, "updated": 0, "unchanged": 0, "failed": 0
    }  # fmt: skip
    ids = sorted(int(i) for i in Contact.objects.values_list("external_id", flat=True))
    assert ids == list(range(2000))  # none duplicated, none skipped


def test_two_workers_keep_to_5_requests_per_second_and_honour_retry_after(
    broker: Broker, tmp_path: Path
) -> None:
    """A run fanned out into 4 page ranges over two workers; the server answers 429 twice, with
    Retry-After in seconds and as a date."""
    api = RemoteApi(pages=41)

    def retry_after_date() -> Answer:
        when = datetime.now(UTC) + timedelta(seconds=3)
        return 429, {"Retry-After": email.utils.format_datetime(when, usegmt=True)}, b""

    api.script[10] = [(429, {"Retry-After": "2"}, b"")]
    api.script[30] = [retry_after_date]
    with (
        remote_api(api),
        sync_worker(api, tmp_path, rate=5) as one,
        sync_worker(api, tmp_path, rate=5) as two,
    ):
        with transaction.atomic():
            job_id = job_enqueue("tasks.syncs.fan_out", kwargs={"name": "contacts", "parts": 4})
        record = job_ended(job_id, timeout=90)
        logs = one.output() + two.output()
    assert record.status == JobStatus.SUCCEEDED, record.error
    assert record.result == {
        "pages": 41, "created": 410, "updated": 0, "unchanged": 0, "failed": 0
    }  # fmt: skip
    assert SyncPart.objects.filter(job_id=job_id).count() == 4
    assert len(set(re.findall(r"tasks\.syncs\.finish\[([0-9a-f-]+)\]", logs))) == 1  # once
    assert "tasks.syncs.part[" in one.output()
    assert "tasks.syncs.part[" in two.output()
    times = sorted(hit.at for hit in api.hits)
    assert len(times) == 43  # 41 pages and two 429s
    windows = [[t for t in times if t0 <= t < t0 + 1.0] for t0 in times]
    busiest = max(windows, key=len)
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(busiest)]
    assert len(busiest) <= 5, gaps
    for page, wait in ((10, 2.0), (30, 1.0)):  # the date form has one-second resolution
        first, again = [hit.at for hit in api.hits if hit.page == page]
        assert again - first >= wait, (page, again - first)
