"""Every write to job records: the status transitions of a tracked job.

Each function is one short statement on the caller's connection, so tracking costs a worker two
writes per job (start, end) plus throttled progress.
"""

from __future__ import annotations

import functools
import json
import operator
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from django.core.serializers.json import DjangoJSONEncoder
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Q, QuerySet, Subquery
from django.utils import timezone

from app.errors import DATABASE_UNAVAILABLE
from app.models import FINAL_STATUSES, JobRecord, JobStatus
from app.statements import Statement

SUMMARY_LENGTH = 200
P = ParamSpec("P")
T = TypeVar("T")


def arguments_summary(args: Any, kwargs: Any) -> str:
    """A short, human summary of a job's arguments (the full ones stay in the payload)."""
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in (kwargs or {}).items()]
    text = ", ".join(parts)
    return text if len(text) <= SUMMARY_LENGTH else text[: SUMMARY_LENGTH - 1] + "…"


# The two writes every tracked job makes (start, succeed) are one prepared SQL statement each
# (app/statements.py): through the ORM they cost 3 to 5 times more worker CPU, which capped
# tracked throughput (make bench, ``tracked_drain_ratio_vs_bare``). The rarer transitions below
# use the ORM.

# The table and statuses are spelled out (app_jobrecord, FINAL_STATUSES): tests/test_jobs.py
# checks every transition, on SQLite and PostgreSQL.
_START = Statement(
    "job_record_start",
    """
INSERT INTO app_jobrecord (
    id, task_name, queue, summary, payload, status, progress, progress_message, attempts,
    error, traceback, cancel_requested, correlation_id, enqueued_at, started_at, updated_at
) VALUES (%s, %s, %s, %s, %s, 'started', 0, '', 1, '', '', FALSE, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET
    status = CASE WHEN app_jobrecord.cancel_requested THEN 'cancelled' ELSE 'started' END,
    attempts = app_jobrecord.attempts + CASE WHEN app_jobrecord.cancel_requested THEN 0 ELSE 1 END,
    started_at = CASE WHEN app_jobrecord.cancel_requested THEN app_jobrecord.started_at
                      ELSE excluded.started_at END,
    finished_at = CASE WHEN app_jobrecord.cancel_requested THEN excluded.started_at END,
    updated_at = excluded.updated_at
WHERE app_jobrecord.status NOT IN ('succeeded', 'failed', 'dead', 'cancelled')
RETURNING status
""",
)

_SUCCEED = Statement(
    "job_record_succeed",
    """
UPDATE app_jobrecord SET status = 'succeeded', progress = 100, result = %s,
    finished_at = %s, updated_at = %s
WHERE id = %s AND status NOT IN ('succeeded', 'failed', 'dead', 'cancelled')
""",
)


def _reconnecting(write: Callable[P, T]) -> Callable[P, T]:
    """A job's record writes run on a connection kept across tasks, without Django's health
    check (a SELECT 1 round trip per task, about a fifth of tracked throughput: make bench).
    A write is its own check: on a connection that broke while idle or while the job ran (a
    database restart) it fails before it runs, and runs once more on a new connection (not
    inside a transaction: that is lost with the connection). Broken in the middle of a start
    write, it may have committed: the job then counts one attempt more, nothing worse; every
    write is guarded."""

    @functools.wraps(write)
    def reconnecting(*args: P.args, **kwargs: P.kwargs) -> T:
        db = connections[DEFAULT_DB_ALIAS]
        reused = db.connection is not None and not db.in_atomic_block
        try:
            return write(*args, **kwargs)
        except DATABASE_UNAVAILABLE:
            if not reused:
                raise
            db.close()
            return write(*args, **kwargs)

    return reconnecting


@_reconnecting
def record_start(
    *, job_id: str, task_name: str, queue: str, args: Any, kwargs: Any, correlation_id: str
) -> bool:
    """Mark a job started (one more attempt). False when it must not run: skip the message.

    One statement for every case: a tracked task called with plain ``delay()`` has no record
    yet and gets one; a record that ended (succeeded, dead, cancelled) is left alone, since this
    is a redelivery; one whose cancellation was requested while it waited ends as cancelled.
    """
    db = connections[DEFAULT_DB_ALIAS]
    now = db.ops.adapt_datetimefield_value(timezone.now())
    payload = json.dumps({"args": list(args), "kwargs": kwargs or {}}, cls=DjangoJSONEncoder)
    params: list[Any] = [
        _uuid_hex(job_id),
        task_name,
        queue,
        arguments_summary(args, kwargs),
        payload,
        correlation_id,
        now,
        now,
        now,
    ]
    return _execute(db, _START, params) == JobStatus.STARTED


@_reconnecting
def record_succeed(*, job_id: str, result: Any) -> None:
    db = connections[DEFAULT_DB_ALIAS]
    now = db.ops.adapt_datetimefield_value(timezone.now())
    _execute(db, _SUCCEED, [_json_or_null(result), now, now, _uuid_hex(job_id)])


def _execute(db: BaseDatabaseWrapper, statement: Statement, params: list[Any]) -> str | None:
    """Run a hot-path statement (app/statements.py); the first column of its first row.

    ``db`` is the thread's connection itself, not Django's ``connection`` proxy: each access
    through that costs a lookup in a thread-local, and these writes make a dozen.
    """
    value = statement.execute(db, params)
    # Proven usable: the task's own queries skip Django's check too (an attribute of Django's
    # connection since 4.1, which django-stubs does not know).
    db.health_check_done = True  # type: ignore[attr-defined]
    return value


def _json_or_null(value: Any) -> str | None:
    return None if value is None else json.dumps(value, cls=DjangoJSONEncoder)


def _uuid_hex(job_id: str) -> str:
    """The id as both PostgreSQL (uuid) and SQLite (32 hex digits) store it."""
    try:
        return uuid.UUID(job_id).hex
    except ValueError:
        raise ValueError(f"a tracked job's id must be a UUID, not {job_id!r}") from None


# The transitions below never leave a final status: a late or duplicate report (a retry whose
# new attempt already finished, a second copy of a job) must not rewrite how a job ended.


def _not_ended(job_id: str) -> QuerySet[JobRecord]:
    return JobRecord.objects.filter(id=job_id).exclude(status__in=FINAL_STATUSES)


@_reconnecting
def record_retry(*, job_id: str, error: str, traceback: str) -> None:
    # Only from "started": the retry may already have been picked up and moved on.
    JobRecord.objects.filter(id=job_id, status=JobStatus.STARTED).update(
        status=JobStatus.RETRYING, error=error, traceback=traceback
    )


@_reconnecting
def record_fail(*, job_id: str, error: str, traceback: str, dead: bool) -> None:
    _not_ended(job_id).update(
        status=JobStatus.DEAD if dead else JobStatus.FAILED,
        error=error,
        traceback=traceback,
        finished_at=timezone.now(),
    )


@_reconnecting
def record_dead_lettered(*, job_id: str, reason: str) -> None:
    """The message went to <queue>.dead: say so, keeping the error on_failure wrote, if any.

    Covers the paths where Celery rejects without calling the task's on_failure (a worker lost
    after its last retry, a retry that could not be published, a task raising Reject).
    """
    _not_ended(job_id).update(status=JobStatus.DEAD, finished_at=timezone.now())
    JobRecord.objects.filter(id=job_id, error="").update(error=reason)


def record_cancelled(*, job_id: str) -> None:
    _not_ended(job_id).update(status=JobStatus.CANCELLED, finished_at=timezone.now())


def record_progress(*, job_id: str, percent: int, message: str) -> bool:
    """Write progress; return whether cancellation was requested."""
    records = JobRecord.objects.filter(id=job_id)
    records.update(progress=percent, progress_message=message[:200], updated_at=timezone.now())
    return records.filter(cancel_requested=True).exists()


def record_request_cancel(*, job_id: str) -> JobStatus | None:
    """Cancel a waiting job at once; ask a running one to stop. Returns the new status."""
    with transaction.atomic():
        record = JobRecord.objects.select_for_update().filter(id=job_id).first()
        if record is None or record.status in FINAL_STATUSES:
            return None
        if record.status in (JobStatus.QUEUED, JobStatus.RETRYING):  # not running right now
            record.status = JobStatus.CANCELLED
            record.finished_at = timezone.now()
        record.cancel_requested = True
        record.save(update_fields=["status", "finished_at", "cancel_requested", "updated_at"])
        return JobStatus(record.status)


def records_prune(*, before: datetime) -> int:
    """Delete ended job records that finished before ``before``. Returns how many."""
    deleted, _ = JobRecord.objects.filter(
        status__in=FINAL_STATUSES, finished_at__lt=before
    ).delete()
    return deleted


def records_newest(*, task_names: Iterable[str]) -> dict[str, JobRecord]:
    """The newest record of each of these tasks (by when it was enqueued or started), in one
    query however many names: a probe per name, ``id = (SELECT ... LIMIT 1)``, that PostgreSQL
    answers from an index (``enqueued_at`` read backwards for a frequent task, ``task_name`` for
    a rare one), not a scan of every record of every name. Only the columns a list shows, not
    payloads and tracebacks."""
    probes = [Q(pk=_newest_id(name)) for name in sorted(set(task_names))]
    if not probes:
        return {}
    records = JobRecord.objects.filter(functools.reduce(operator.or_, probes)).only(
        "task_name", "status", "enqueued_at", "started_at", "finished_at"
    )
    return {record.task_name: record for record in records.order_by()}


def _newest_id(task_name: str) -> Subquery:
    newest = JobRecord.objects.filter(task_name=task_name).order_by("-enqueued_at")
    return Subquery(newest.values("pk")[:1])
