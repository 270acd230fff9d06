"""20 clients enqueue demo jobs at once through the real web server (bin/web) while a worker runs
them: every job succeeds, no outbox row is set aside, no "database is locked" (SQLite default)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from app.models import JobRecord, JobStatus, OutboxMessage
from tests.support import Broker, running_web, running_worker, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CLIENTS = 20
JOBS_PER_CLIENT = 15


def demo_jobs(url: str) -> list[str]:
    """One client: enqueue demo jobs one after the other; the ids."""
    with httpx.Client(base_url=url, timeout=60) as http:
        responses = [
            http.post("/api/example/demo/", json={"upto": 200}) for _ in range(JOBS_PER_CLIENT)
        ]
    assert [r.status_code for r in responses] == [202] * JOBS_PER_CLIENT, responses[-1].text
    return [r.json()["id"] for r in responses]


def test_a_newcomers_load_runs_every_job_and_sets_no_outbox_row_aside(
    broker: Broker, tmp_path: Path
) -> None:
    """20 clients enqueue demo jobs at once through bin/web while a bin/worker-io-like worker
    runs them, on the database the suite runs on (SQLite by default, as `make run` has it)."""
    with (
        running_worker(pool="threads", concurrency=8, log_dir=tmp_path) as worker,
        running_web(log_dir=tmp_path) as web,
    ):
        started = time.monotonic()
        with ThreadPoolExecutor(CLIENTS) as pool:
            ids = [i for client in pool.map(demo_jobs, [web.url] * CLIENTS) for i in client]
        enqueued = time.monotonic() - started

        def succeeded() -> bool:
            return JobRecord.objects.filter(id__in=ids, status=JobStatus.SUCCEEDED).count() == len(
                ids
            )

        wait_for(succeeded, timeout=300, what=f"{len(ids)} demo jobs to succeed")
        ran = time.monotonic() - started
        logs = web.output() + worker.output()
    print(
        f"{len(ids)} jobs: enqueued in {enqueued:.1f} s, all succeeded after {ran:.1f} s;",
        f"'database is locked' in the web log {web.output().count('database is locked')} times,",
        f"in the worker log {worker.output().count('database is locked')} times",
    )
    assert OutboxMessage.objects.exclude(error="").count() == 0
    assert OutboxMessage.objects.filter(sent_at__isnull=True).count() == 0
    assert logs.count("database is locked") == 0
    assert "cannot be published" not in logs
