"""Jobs you can see, trust and repair: records, transactional enqueue, idempotency, replay.

These run on the real broker and a real worker, and on PostgreSQL in CI (the relay's row locks
need it; the tests that depend on them say so).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import DataError, close_old_connections, connection, transaction
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory
from django.utils import timezone
from kombu.exceptions import OperationalError

from app import records, statements
from app.context import MESSAGE_HEADER, CorrelationIdMiddleware
from app.enqueue import EnqueueError, job_enqueue
from app.models import JobRecord, JobStatus, OutboxMessage
from app.outbox import outbox_relay
from config.celery import app as celery_app
from tests import jobs
from tests.support import (
    ROOT,
    Broker,
    TcpProxy,
    database_url,
    read_events,
    running_worker,
    wait_for,
)

pytestmark = [pytest.mark.django_db(transaction=True)]
postgres_only = pytest.mark.skipif(
    os.environ.get("DATABASE_URL", "").startswith("postgres") is False,
    reason="needs PostgreSQL (row locks, statistics); CI runs the suite on PostgreSQL",
)


def record(job_id: str) -> JobRecord:
    return JobRecord.objects.get(id=job_id)


def status_is(job_id: str, status: JobStatus) -> bool:
    return record(job_id).status == status


def test_a_rolled_back_transaction_publishes_nothing(broker: Broker, events: Path) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        job_enqueue(jobs.tracked_record, args=[str(events)])
        raise RuntimeError("the view failed after enqueueing")
    assert broker.depth("default") == 0
    assert not JobRecord.objects.exists() and not OutboxMessage.objects.exists()


def test_a_committed_enqueue_is_published_and_marked_sent(broker: Broker, events: Path) -> None:
    with transaction.atomic():
        job_id = job_enqueue(jobs.tracked_record, args=[str(events)])
        assert broker.depth("default") == 0  # not before the commit
    assert broker.depth("default") == 1
    assert OutboxMessage.objects.get(task_id=job_id).sent_at is not None
    assert record(job_id).status == JobStatus.QUEUED
    assert record(job_id).queue == "default"


@pytest.mark.slow
def test_jobs_enqueued_while_the_broker_is_down_run_exactly_once_when_it_is_back(
    broker: Broker, events: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = TcpProxy()
    real_url = celery_app.conf.broker_url
    # This process (the web app) reaches RabbitMQ through the proxy; the worker does not.
    monkeypatch.setenv("CELERY_BROKER_URL", proxy.url(real_url))
    proxy.up()
    try:
        with transaction.atomic():
            job_enqueue(jobs.record, args=[str(events)])  # connected...
        proxy.down()  # ...and then RabbitMQ goes away
        ids = []
        for _ in range(1000):
            with transaction.atomic():
                ids.append(job_enqueue(jobs.record, args=[str(events)]))
        assert OutboxMessage.objects.filter(sent_at__isnull=True).count() == 1000
        with pytest.raises(OperationalError):  # the relay cannot publish either, loses nothing
            outbox_relay()
        assert OutboxMessage.objects.filter(sent_at__isnull=True).count() == 1000
        proxy.up()
        assert outbox_relay() == 1000
    finally:
        proxy.down()
        monkeypatch.setenv("CELERY_BROKER_URL", real_url)
    with running_worker(log_dir=tmp_path):
        wait_for(lambda: len(read_events(events)) >= 2 * 1001, timeout=120, what="1001 jobs")
        time.sleep(1)  # time for any duplicate to show up
    done = Counter(e["task_id"] for e in read_events(events) if e["event"] == "done")
    assert set(ids) <= set(done)
    assert set(done.values()) == {1}, "a job ran more than once"


def relay_process(*, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "manage.py", "relay_outbox", "--batch-size", "200"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


@postgres_only
@pytest.mark.slow
def test_two_relays_side_by_side_publish_each_row_once(broker: Broker) -> None:
    OutboxMessage.objects.bulk_create(
        OutboxMessage(task_id=f"00000000-0000-4000-8000-{i:012d}", task_name="tests.jobs.record")
        for i in range(10_000)
    )
    env = {**os.environ, "DATABASE_URL": database_url()}
    relays = [relay_process(env=env), relay_process(env=env)]
    outputs = [relay.communicate(timeout=300)[0] for relay in relays]
    assert all(relay.returncode == 0 for relay in relays), outputs
    counts = [int(out.split("published ")[1].split()[0]) for out in outputs]
    assert sum(counts) == 10_000 and min(counts) > 0, counts  # both worked, no row twice
    assert broker.depth("default") == 10_000
    assert not OutboxMessage.objects.filter(sent_at__isnull=True).exists()


ENQUEUE_WITH_KEY = """
import django, os, sys, time
django.setup()
from django.db import transaction
from app.enqueue import job_enqueue
import tests.jobs  # registers the test tasks, as the test worker does
while not os.path.exists(sys.argv[1]):
    time.sleep(0.001)
with transaction.atomic():
    print(job_enqueue("tests.jobs.tracked_record", args=["/dev/null"], idempotency_key="order-42"))
"""


@postgres_only
def test_the_same_idempotency_key_from_two_processes_at_once_gives_one_job(
    broker: Broker, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PYTHONPATH": str(ROOT),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", ENQUEUE_WITH_KEY, str(go)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    time.sleep(1.5)  # both are waiting at the line
    go.touch()
    results = [proc.communicate(timeout=60) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), results
    ids = {out.strip() for out, _ in results}
    assert len(ids) == 1
    assert JobRecord.objects.filter(idempotency_key="order-42").count() == 1
    assert OutboxMessage.objects.count() == 1
    assert broker.depth("default") == 1


def test_enqueue_with_a_used_key_returns_the_first_job(broker: Broker, events: Path) -> None:
    with transaction.atomic():
        first = job_enqueue(jobs.tracked_record, args=[str(events)], idempotency_key="k")
    with transaction.atomic():
        again = job_enqueue(jobs.tracked_record, args=[str(events)], idempotency_key="k")
    assert again == first
    assert broker.depth("default") == 1


@pytest.mark.slow
def test_killed_after_its_effect_committed_the_job_runs_again_and_the_effect_happens_once(
    broker: Broker, events: Path, tmp_path: Path
) -> None:
    with transaction.atomic():
        job_id = job_enqueue(jobs.effect_then_die, args=[str(events), "credit-1"])
    with running_worker(log_dir=tmp_path):
        wait_for(lambda: status_is(job_id, JobStatus.SUCCEEDED), timeout=40, what="success")
    assert record(job_id).attempts == 2
    assert record(job_id).result is False  # the second run found the claim and skipped
    assert [e["event"] for e in read_events(events)] == ["effect"]


@pytest.mark.slow
def test_a_redelivered_message_of_a_succeeded_job_is_acked_and_skipped(
    broker: Broker, events: Path, tmp_path: Path
) -> None:
    with transaction.atomic():
        job_id = job_enqueue(jobs.tracked_record, args=[str(events)])
    with running_worker(log_dir=tmp_path) as worker:
        wait_for(lambda: status_is(job_id, JobStatus.SUCCEEDED), what="success")
        celery_app.send_task(jobs.tracked_record.name, args=[str(events)], task_id=job_id)
        wait_for(lambda: "redelivered message acknowledged and skipped" in worker.output())
    assert [e["event"] for e in read_events(events)] == ["start", "done"]
    assert record(job_id).attempts == 1
    assert broker.depth("default") == 0 and broker.depth("default.dead") == 0


@pytest.mark.slow
def test_progress_is_visible_while_a_long_loop_runs_with_few_writes(
    broker: Broker, tmp_path: Path
) -> None:
    def updates() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = %s",
                [JobRecord._meta.db_table],
            )
            return int(cursor.fetchone()[0])

    postgres = connection.vendor == "postgresql"
    before = updates() if postgres else 0
    with transaction.atomic():
        # Each step sleeps (at least the kernel's ~50 us), so the loop spans several progress
        # intervals however fast the machine: a bare million-step loop can end within one.
        job_id = job_enqueue(jobs.count_slowly, kwargs={"upto": 100_000, "pause": 1e-6})
    seen = set()
    with running_worker(log_dir=tmp_path):

        def finished() -> bool:
            job = record(job_id)
            if job.status == JobStatus.STARTED:
                seen.add(job.progress)
            return job.status == JobStatus.SUCCEEDED

        wait_for(finished, timeout=120, what="the hundred thousand steps")
    assert any(0 < p < 100 for p in seen), seen
    assert record(job_id).result == {"counted": 100_000}
    if postgres:  # statistics reach pg_stat when the worker's connections close
        writes = wait_for(lambda: updates() - before or None, what="statistics")
        assert writes <= 300, writes


@pytest.mark.slow
def test_replaying_a_dead_job_runs_it_again_linked_to_the_original(
    broker: Broker, tmp_path: Path
) -> None:
    flag = tmp_path / "flag"
    with transaction.atomic():
        job_id = job_enqueue(jobs.fails_until_file_exists, args=[str(flag)])
    with running_worker(log_dir=tmp_path):
        wait_for(lambda: status_is(job_id, JobStatus.DEAD), what="the job to die")
        assert "PermanentError" in record(job_id).error
        wait_for(lambda: broker.depth("default.dead") == 1, what="its dead letter")
        flag.touch()
        call_command("jobs", "replay", job_id)
        replay = wait_for(lambda: JobRecord.objects.filter(replay_of_id=uuid.UUID(job_id)).first())
        wait_for(lambda: status_is(str(replay.id), JobStatus.SUCCEEDED), what="the replay")
    assert record(str(replay.id)).result == "found it"
    assert record(job_id).status == JobStatus.DEAD  # the original keeps its story
    assert broker.depth("default.dead") == 0
    with pytest.raises(CommandError, match=f"was replayed already, as {replay.id}"):
        call_command("jobs", "replay", job_id)
    assert JobRecord.objects.filter(replay_of_id=uuid.UUID(job_id)).count() == 1


def test_jobs_dead_lists_reason_and_error(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with transaction.atomic():
        job_id = job_enqueue(jobs.fails_until_file_exists, args=[str(tmp_path / "never")])
    with running_worker(log_dir=tmp_path):
        wait_for(lambda: broker.depth("default.dead") == 1, what="a dead letter")
    call_command("jobs", "dead")
    out = capsys.readouterr().out
    assert "default.dead: 1" in out
    assert job_id in out and "rejected" in out and "PermanentError" in out
    assert broker.depth("default.dead") == 1  # listing takes nothing away


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["replay", "not-a-uuid"], "'not-a-uuid' is not a job id"),
        (["replay", "6f1c1c0e-3d5b-4a1e-9a57-1f5a5f0b1d00"], "no dead job"),
        (["cancel", "6f1c1c0e-3d5b-4a1e-9a57-1f5a5f0b1d00"], "unknown or already ended"),
        (["cancel", "1234"], "'1234' is not a job id"),
        (["replay"], "name the job ids"),
        (["dead", "--queue", "nope"], "unknown queue 'nope'"),
    ],
)
def test_bad_job_ids_get_clear_errors_and_change_nothing(
    broker: Broker, argv: list[str], message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("jobs", *argv)
    assert not JobRecord.objects.exists()
    assert broker.depth("default") == 0


def test_replaying_a_job_that_is_not_dead_is_refused(broker: Broker, events: Path) -> None:
    with transaction.atomic():
        job_id = job_enqueue(jobs.tracked_record, args=[str(events)])
    with pytest.raises(CommandError, match=f"job {job_id} is queued, not dead"):
        call_command("jobs", "replay", job_id)
    assert JobRecord.objects.count() == 1
    assert broker.depth("default") == 1


@pytest.mark.slow
def test_a_cancelled_queued_job_never_runs(broker: Broker, events: Path, tmp_path: Path) -> None:
    with transaction.atomic():
        job_id = job_enqueue(jobs.tracked_record, args=[str(events)])
    call_command("jobs", "cancel", job_id)
    assert status_is(job_id, JobStatus.CANCELLED)
    with running_worker(log_dir=tmp_path):
        wait_for(lambda: broker.depth("default") == 0, what="the message to be taken")
        time.sleep(1)
    assert read_events(events) == []
    assert status_is(job_id, JobStatus.CANCELLED)


def test_enqueue_refuses_unknown_tasks_and_arguments_that_are_not_json(broker: Broker) -> None:
    with pytest.raises(EnqueueError, match=r"unknown task 'tasks\.nope\.missing'"):
        job_enqueue("tasks.nope.missing")
    with pytest.raises(EnqueueError, match="must be JSON values"):
        job_enqueue(jobs.tracked_record, args=[object()])
    with pytest.raises(EnqueueError, match="declare it with tracked=True"):
        job_enqueue(jobs.record, args=["/dev/null"], idempotency_key="x")
    assert not OutboxMessage.objects.exists() and broker.depth("default") == 0


@pytest.mark.slow
def test_pruning_deletes_old_ended_records_and_sent_rows_only(broker: Broker) -> None:
    from tasks.maintenance import prune_jobs

    with transaction.atomic():
        old = job_enqueue(jobs.tracked_record, args=["/dev/null"])
        recent = job_enqueue(jobs.tracked_record, args=["/dev/null"])
    long_ago = "2000-01-01T00:00:00+00:00"
    JobRecord.objects.filter(id__in=[old, recent]).update(status=JobStatus.SUCCEEDED)
    JobRecord.objects.filter(id=old).update(finished_at=long_ago)
    OutboxMessage.objects.filter(task_id=old).update(sent_at=long_ago)
    OutboxMessage.objects.create(task_id="00000000-0000-4000-8000-000000000001", task_name="x")
    assert prune_jobs() == {"records": 1, "outbox": 1, "claims": 0}
    assert JobRecord.objects.filter(id=recent).exists()
    assert not JobRecord.objects.filter(id=old).exists()
    assert OutboxMessage.objects.filter(sent_at__isnull=True).count() == 1


@pytest.mark.slow
def test_the_request_correlation_id_reaches_the_record_and_the_worker_logs(
    broker: Broker, events: Path, tmp_path: Path
) -> None:
    enqueued: list[str] = []

    def view(request: HttpRequest) -> HttpResponse:
        with transaction.atomic():
            enqueued.append(job_enqueue(jobs.tracked_record, args=[str(events)]))
        return HttpResponse(status=202)

    middleware = CorrelationIdMiddleware(view)
    response = middleware(RequestFactory().post("/", HTTP_X_REQUEST_ID="req-7f3a"))
    assert response["X-Request-ID"] == "req-7f3a"
    job_id = enqueued[0]
    assert record(job_id).correlation_id == "req-7f3a"
    # In development (DEBUG on: readable lines), `grep task_id=<id>` finds the job's lines.
    with running_worker(log_dir=tmp_path, env={"DJANGO_DEBUG": "1"}) as worker:
        wait_for(lambda: status_is(job_id, JobStatus.SUCCEEDED), what="success")
        log = worker.output()
    line = (
        f"task_id={job_id} task=tests.jobs.tracked_record attempt=1 queue=default "
        "correlation_id=req-7f3a"
    )
    assert line in log, "\n".join(x for x in log.splitlines() if job_id in x)
    # A malformed incoming id is replaced, not trusted.
    response = middleware(RequestFactory().post("/", HTTP_X_REQUEST_ID="bad id\n"))
    assert response["X-Request-ID"] != "bad id\n" and len(response["X-Request-ID"]) == 32


@pytest.mark.slow
def test_a_tracked_job_lost_with_its_worker_after_its_last_retry_is_recorded_dead(
    broker: Broker, tmp_path: Path
) -> None:
    with transaction.atomic():
        job_id = job_enqueue(jobs.tracked_kill_own_process)
    with running_worker(log_dir=tmp_path):
        wait_for(lambda: broker.depth("default.dead") == 1, timeout=30, what="the dead letter")
        wait_for(lambda: status_is(job_id, JobStatus.DEAD), what="the record to say dead")
    assert "dead-lettered to default.dead" in record(job_id).error


def test_a_late_or_duplicate_report_never_rewrites_how_a_job_ended(broker: Broker) -> None:
    with transaction.atomic():
        job_id = job_enqueue(jobs.tracked_record, args=["/dev/null"])
    records.record_start(
        job_id=job_id, task_name="t", queue="default", args=(), kwargs={}, correlation_id=""
    )
    records.record_succeed(job_id=job_id, result={"ok": True})
    records.record_retry(job_id=job_id, error="late retry", traceback="")
    records.record_fail(job_id=job_id, error="second copy failed", traceback="", dead=True)
    records.record_cancelled(job_id=job_id)
    job = record(job_id)
    assert (job.status, job.result, job.error) == (JobStatus.SUCCEEDED, {"ok": True}, "")


def test_a_row_that_cannot_be_published_is_set_aside_and_blocks_nothing(broker: Broker) -> None:
    with pytest.raises(EnqueueError, match=r"routes to a queue config/queues\.py lacks"):
        job_enqueue(jobs.misrouted)
    # Such a row can still exist (written before a route changed, or by hand).
    bad = OutboxMessage.objects.create(task_id=uuid.uuid4(), task_name=jobs.misrouted.name)
    for _ in range(2):
        OutboxMessage.objects.create(task_id=uuid.uuid4(), task_name=jobs.record.name)
    assert outbox_relay() == 2
    assert outbox_relay() == 0  # nothing published twice, nothing stuck behind the bad row
    assert broker.depth("default") == 2
    bad.refresh_from_db()
    assert bad.sent_at is None and "no-such-queue" in bad.error


def test_an_eta_past_the_consumer_timeout_is_refused(broker: Broker) -> None:
    later = timezone.now() + timedelta(hours=2)
    with pytest.raises(EnqueueError, match="consumer_timeout"):
        job_enqueue(jobs.tracked_record, args=["/dev/null"], eta=later)
    assert not OutboxMessage.objects.exists()


def test_record_start_covers_every_state_in_one_statement() -> None:
    """record_start is raw SQL (one upsert): each case the ORM version handled, on both DBs."""

    def start(job_id: str, args: tuple[object, ...] = ()) -> bool:
        return records.record_start(
            job_id=job_id, task_name="t", queue="q", args=args, kwargs={}, correlation_id="c"
        )

    new = str(uuid.uuid4())  # sent with plain delay(): no record yet
    assert start(new, args=("x" * 300,)) is True
    created = record(new)
    assert (created.status, created.attempts, created.queue) == (JobStatus.STARTED, 1, "q")
    assert created.payload == {"args": ["x" * 300], "kwargs": {}}
    assert len(created.summary) == records.SUMMARY_LENGTH and created.correlation_id == "c"
    assert created.started_at is not None and created.finished_at is None

    assert start(new) is True  # a retry: one more attempt
    assert record(new).attempts == 2

    records.record_succeed(job_id=new, result=None)
    assert start(new) is False  # a redelivery of an ended job: skipped, left alone
    ended = record(new)
    assert (ended.status, ended.attempts, ended.result) == (JobStatus.SUCCEEDED, 2, None)

    waiting = str(uuid.uuid4())
    JobRecord.objects.create(id=waiting, task_name="t", status=JobStatus.RETRYING, attempts=1)
    JobRecord.objects.filter(id=waiting).update(cancel_requested=True)
    assert start(waiting) is False  # cancelled while it waited for its retry: ends now
    cancelled = record(waiting)
    assert (cancelled.status, cancelled.attempts) == (JobStatus.CANCELLED, 1)
    assert cancelled.finished_at is not None

    with pytest.raises(ValueError, match="must be a UUID"):
        start("not-a-uuid")


def start_a_new_record() -> str:
    job_id = str(uuid.uuid4())
    assert records.record_start(
        job_id=job_id, task_name="t", queue="q", args=(), kwargs={}, correlation_id=""
    )
    return job_id


@postgres_only
def test_the_record_writes_are_prepared_once_per_connection() -> None:
    """Prepared, PostgreSQL plans each write once per connection, not once per job."""
    for _ in range(3):
        job_id = start_a_new_record()
        records.record_succeed(job_id=job_id, result=None)
    assert prepared_statements() == {"job_record_start", "job_record_succeed"}


@postgres_only
def test_the_record_writes_prepare_again_when_their_statements_were_dropped() -> None:
    """As DISCARD ALL or a connection pooler may do behind the application's back; one
    statement dropped must not break the other (it did: "already exists")."""
    records.record_succeed(job_id=start_a_new_record(), result=None)
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE job_record_succeed")
    assert prepared_statements() == {"job_record_start"}
    for _ in range(2):
        job_id = start_a_new_record()
        records.record_succeed(job_id=job_id, result=None)
        assert record(job_id).status == JobStatus.SUCCEEDED
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")
    records.record_succeed(job_id=start_a_new_record(), result=None)
    assert prepared_statements() == {"job_record_start", "job_record_succeed"}


@postgres_only
def test_a_record_write_prepared_but_not_noted_is_not_prepared_twice() -> None:
    """As when a time limit interrupts a job between preparing a statement and noting it."""
    start_a_new_record()
    statements._prepared.clear()
    assert record(start_a_new_record()).status == JobStatus.STARTED


@postgres_only
def test_the_record_writes_survive_a_schema_change_under_a_prepared_statement() -> None:
    """A migration that changes a returned column's type makes PostgreSQL refuse the prepared
    statement ("cached plan must not change result type"): every tracked job on an open
    connection went dead until the connection aged out."""
    start_a_new_record()
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE app_jobrecord ALTER COLUMN status TYPE varchar(12)")
    try:
        assert record(start_a_new_record()).status == JobStatus.STARTED
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE app_jobrecord ALTER COLUMN status TYPE varchar(10)")


@postgres_only
def test_a_record_write_rejected_by_the_database_raises_its_error_and_leaves_it_usable() -> None:
    with pytest.raises(DataError, match="value too long"):
        records.record_start(
            job_id=str(uuid.uuid4()), task_name="t" * 201, queue="q", args=(), kwargs={},
            correlation_id="",
        )  # fmt: skip
    assert record(start_a_new_record()).status == JobStatus.STARTED


def test_record_writes_in_a_transaction_roll_back_with_it() -> None:
    """Outside Django's cursors, a write would not be part of the transaction psycopg opens
    lazily, on a cursor's first statement."""
    job_id = str(uuid.uuid4())
    with pytest.raises(RuntimeError), transaction.atomic():
        records.record_start(
            job_id=job_id, task_name="t", queue="q", args=(), kwargs={}, correlation_id=""
        )
        raise RuntimeError("rolled back")
    assert not JobRecord.objects.filter(id=job_id).exists()


def prepared_statements() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_prepared_statements")
        return {row[0] for row in cursor.fetchall()}


@postgres_only
def test_a_connection_killed_while_idle_is_replaced_by_the_start_write() -> None:
    """As after a PostgreSQL restart: the worker's next job must not fail (nor be retried) on a
    dead connection. The write runs once more on a new connection."""
    start_a_new_record()
    backend = connection.connection.info.backend_pid
    with psycopg.connect(database_url(), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [backend])
    close_old_connections()  # what the worker does around each task
    job_id = start_a_new_record()
    assert connection.connection.info.backend_pid != backend
    assert record(job_id).attempts == 1


@postgres_only
def test_the_record_writes_make_no_health_check_round_trip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Django's CONN_HEALTH_CHECKS runs a SELECT 1 before the first query of every task: a
    third database round trip per tracked job, about a fifth of tracked throughput. The start
    write is the check, and vouches for the connection to the task's own queries."""
    start_a_new_record()
    checks: list[bool] = []

    def is_usable() -> bool:
        checks.append(True)
        return True

    monkeypatch.setattr(connection, "is_usable", is_usable)
    for _ in range(3):
        close_old_connections()  # what the worker does around each task
        start_a_new_record()
        JobRecord.objects.count()  # the task's own query
    assert checks == []
    close_old_connections()
    JobRecord.objects.count()  # without a record write first, Django checks as usual
    assert checks == [True]


@postgres_only
def test_a_final_write_reconnects_once_when_the_connection_broke_during_the_job() -> None:
    """Without it, a job that succeeded across a database restart stayed "started" forever."""
    job_id = str(uuid.uuid4())
    records.record_start(
        job_id=job_id, task_name="t", queue="q", args=(), kwargs={}, correlation_id=""
    )
    with psycopg.connect(database_url(), autocommit=True) as other:  # the job runs; PG restarts
        other.execute("SELECT pg_terminate_backend(%s)", [connection.connection.info.backend_pid])
    jobs.tracked_record.on_success({"ok": True}, job_id, (), {})
    assert record(job_id).status == JobStatus.SUCCEEDED


@pytest.mark.slow
def test_a_malformed_correlation_header_is_dropped_not_the_job(
    broker: Broker, events: Path, tmp_path: Path
) -> None:
    """Message headers are input: one too long for its column (or with a NUL byte, which
    PostgreSQL cannot store) used to fail the start write, and the job went dead."""
    bad = {"too long": "x" * 65, "NUL": "ab\x00cd", "not text": {"a": 1}}
    ids = {
        name: celery_app.send_task(
            jobs.tracked_record.name, args=[str(events)], headers={MESSAGE_HEADER: value}
        ).id
        for name, value in bad.items()
    }
    with running_worker(log_dir=tmp_path):
        succeeded = JobRecord.objects.filter(id__in=ids.values(), status=JobStatus.SUCCEEDED)
        wait_for(lambda: succeeded.count() == 3, what="the three jobs succeeded")
    assert {record(job_id).correlation_id for job_id in ids.values()} == {""}
    assert broker.depth("default.dead") == 0


@pytest.mark.slow
def test_a_tracked_job_whose_id_is_not_a_uuid_is_dead_lettered_with_a_clear_error(
    broker: Broker, tmp_path: Path
) -> None:
    """apply_async(task_id=...) takes any string; a record needs a UUID. The record writes
    failing must not keep the message from its dead-letter queue (it stayed unacknowledged)."""
    with running_worker(log_dir=tmp_path) as worker:
        celery_app.send_task(jobs.tracked_record.name, args=["/dev/null"], task_id="not-a-uuid")
        wait_for(lambda: broker.depth("default.dead") == 1, what="the job in default.dead")
        assert "a tracked job's id must be a UUID, not 'not-a-uuid'" in worker.output()
    assert broker.depth("default") == 0


def test_jobs_retried_for_a_database_outage_back_off_with_jitter() -> None:
    countdowns = {jobs.tracked_record.backoff(retries=4) for _ in range(50)}
    assert len(countdowns) > 1 and max(countdowns) <= 16  # spread over 0..16 s, not all at 16


def test_the_raw_sql_spells_the_table_and_final_statuses_as_the_model_does() -> None:
    final = ", ".join(f"'{status.value}'" for status in records.FINAL_STATUSES)
    for sql in (records._START.sql, records._SUCCEED.sql):
        assert JobRecord._meta.db_table in sql and f"NOT IN ({final})" in sql


def database_sessions() -> int:
    """Connections ever opened to the test database (PostgreSQL 14+ statistics)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


@postgres_only
@pytest.mark.slow
def test_workers_reuse_database_connections_across_tasks(broker: Broker, tmp_path: Path) -> None:
    """Celery's Django fixup closes connections around every task unless CELERY_DB_REUSE_MAX
    reaches it, and in prefork children it closes the whole pool: a new backend per job."""
    with running_worker(log_dir=tmp_path, pool="prefork", concurrency=2):
        warm = [job_enqueue(jobs.tracked_record, args=["/dev/null"]) for _ in range(4)]
        wait_for(lambda: all(status_is(job_id, JobStatus.SUCCEEDED) for job_id in warm))
        before = database_sessions()
        batch = [job_enqueue(jobs.tracked_record, args=["/dev/null"]) for _ in range(60)]
        wait_for(lambda: all(status_is(job_id, JobStatus.SUCCEEDED) for job_id in batch))
        opened = database_sessions() - before
    assert opened < 10, f"{opened} new database connections for 60 tracked jobs"


def succeeded(job_ids: list[str]) -> bool:
    """Whether every one of these jobs (records made by the worker) has succeeded."""
    done = JobRecord.objects.filter(id__in=job_ids, status=JobStatus.SUCCEEDED).count()
    return done == len(job_ids)


@postgres_only
@pytest.mark.slow
def test_a_database_outage_delays_tracked_jobs_and_loses_none(
    broker: Broker, events: Path, tmp_path: Path
) -> None:
    """The worker reaches PostgreSQL through a proxy that goes down: jobs starting meanwhile
    are retried, not dead-lettered, and run once the database is back."""
    proxy = TcpProxy(target=("127.0.0.1", 5432))
    proxy.up()
    try:
        worker_env = {"DATABASE_URL": proxy.url(database_url())}
        with running_worker(log_dir=tmp_path, pool="threads", env=worker_env) as worker:
            warm = jobs.tracked_record.delay(str(events)).id
            wait_for(lambda: succeeded([warm]), what="a job before the outage")
            proxy.down()
            during = [jobs.tracked_record.delay(str(events)).id for _ in range(3)]
            wait_for(
                lambda: worker.output().count("Retry in") >= 3, what="the worker to retry them"
            )
            proxy.up()
            wait_for(
                lambda: succeeded(during),
                timeout=60,
                what="the jobs to run once the database is back",
            )
    finally:
        proxy.down()
    assert [e["event"] for e in read_events(events)].count("done") == 4
    assert broker.depth("default") == 0 and broker.depth("default.dead") == 0
