"""20 clients enqueue demo jobs at once through the real web server (bin/web) while a worker runs
them: every job succeeds, no outbox row is set aside, no "database is locked" (SQLite default)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, Broker, running_web, running_worker, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

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


def test_a_newcomers_load_on_sqlite_runs_every_job_and_sets_no_outbox_row_aside(
    broker: Broker, tmp_path: Path
) -> None:
    """20 clients enqueue demo jobs at once through bin/web while a bin/worker-io-like worker
    runs them, on SQLite as `make run` has it (whatever database the suite runs on)."""
    database = tmp_path / "newcomer.sqlite3"
    env = {"DATABASE_URL": f"sqlite:///{database}", "DJANGO_SETTINGS_MODULE": "config.settings"}
    migrated = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env={**os.environ, **env},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr

    def count(sql: str) -> int:
        with contextlib.closing(sqlite3.connect(database, timeout=30)) as db:
            return int(db.execute(sql).fetchone()[0])

    with (
        running_worker(pool="threads", concurrency=8, log_dir=tmp_path, env=env) as worker,
        running_web(log_dir=tmp_path, env=env) as web,
    ):
        started = time.monotonic()
        with ThreadPoolExecutor(CLIENTS) as pool:
            ids = [i for client in pool.map(demo_jobs, [web.url] * CLIENTS) for i in client]
        enqueued = time.monotonic() - started
        assert len(set(ids)) == CLIENTS * JOBS_PER_CLIENT
        succeeded = "SELECT count(*) FROM app_jobrecord WHERE status = 'succeeded'"
        wait_for(
            lambda: count(succeeded) == len(ids), timeout=300, what="every demo job to succeed"
        )
        ran = time.monotonic() - started
        logs = web.output() + worker.output()
    print(
        f"{len(ids)} jobs: enqueued in {enqueued:.1f} s, all succeeded after {ran:.1f} s;",
        f"'database is locked' in the web log {web.output().count('database is locked')} times,",
        f"in the worker log {worker.output().count('database is locked')} times",
    )
    assert count("SELECT count(*) FROM app_jobrecord") == len(ids)
    assert count("SELECT count(*) FROM app_outboxmessage WHERE error != ''") == 0
    assert count("SELECT count(*) FROM app_outboxmessage WHERE sent_at IS NULL") == 0
    assert logs.count("database is locked") == 0
    assert "cannot be published" not in logs
