"""Every write to job records: the status transitions of a tracked job.

Each function is one short statement on the caller's connection, so tracking costs a worker two
writes per job (start, end) plus throttled progress.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from app.models import FINAL_STATUSES, JobRecord, JobStatus

SUMMARY_LENGTH = 200


def arguments_summary(args: Any, kwargs: Any) -> str:
    """A short, human summary of a job's arguments (the full ones stay in the payload)."""
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in (kwargs or {}).items()]
    text = ", ".join(parts)
    return text if len(text) <= SUMMARY_LENGTH else text[: SUMMARY_LENGTH - 1] + "…"


def record_start(
    *, job_id: str, task_name: str, queue: str, args: Any, kwargs: Any, correlation_id: str
) -> bool:
    """Mark a job started (one more attempt). False when it already ended: skip the message.

    A tracked task called with plain ``delay()`` has no record yet; it gets one here.
    """
    now = timezone.now()
    updated = (
        JobRecord.objects.filter(id=job_id, cancel_requested=False)
        .exclude(status__in=FINAL_STATUSES)
        .update(status=JobStatus.STARTED, attempts=F("attempts") + 1, started_at=now)
    )
    if updated:
        return True
    # Cancelled while it waited for a retry: end it now instead of running it.
    JobRecord.objects.filter(id=job_id, cancel_requested=True).exclude(
        status__in=FINAL_STATUSES
    ).update(status=JobStatus.CANCELLED, finished_at=now)
    _, created = JobRecord.objects.get_or_create(
        id=job_id,
        defaults={
            "task_name": task_name,
            "queue": queue,
            "summary": arguments_summary(args, kwargs),
            "payload": {"args": list(args), "kwargs": kwargs or {}},
            "status": JobStatus.STARTED,
            "attempts": 1,
            "started_at": now,
            "correlation_id": correlation_id,
        },
    )
    return created  # not created: it exists and ended (succeeded, dead, cancelled): a redelivery


# The transitions below never leave a final status: a late or duplicate report (a retry whose
# new attempt already finished, a second copy of a job) must not rewrite how a job ended.


def _not_ended(job_id: str) -> QuerySet[JobRecord]:
    return JobRecord.objects.filter(id=job_id).exclude(status__in=FINAL_STATUSES)


def record_succeed(*, job_id: str, result: Any) -> None:
    _not_ended(job_id).update(
        status=JobStatus.SUCCEEDED, progress=100, result=result, finished_at=timezone.now()
    )


def record_retry(*, job_id: str, error: str, traceback: str) -> None:
    # Only from "started": the retry may already have been picked up and moved on.
    JobRecord.objects.filter(id=job_id, status=JobStatus.STARTED).update(
        status=JobStatus.RETRYING, error=error, traceback=traceback
    )


def record_fail(*, job_id: str, error: str, traceback: str, dead: bool) -> None:
    _not_ended(job_id).update(
        status=JobStatus.DEAD if dead else JobStatus.FAILED,
        error=error,
        traceback=traceback,
        finished_at=timezone.now(),
    )


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
