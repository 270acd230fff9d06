"""What the job views share: who sees which job, the list filter, and a job as JSON.

Visibility, the one rule every view applies (``jobs_visible``):

- staff see every job;
- a logged-in user sees the jobs they own;
- a job without an owner (enqueued by a script, a periodic job, an anonymous demo request) can be
  read by anyone who has its id, as with an unguessable link, but it is listed to staff only.

A job that is not visible answers exactly like an unknown one, so ids of other people's jobs
cannot be probed. Cancelling takes more than seeing: staff, or the job's owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db.models import Q, QuerySet
from django.http import QueryDict

from app.deadletters import DeadLetterError, job_id_parse
from app.models import FINAL_STATUSES, JobRecord, JobStatus

#: Statuses a job can be cancelled in (a queued job at once, the others at their next progress).
CANCELLABLE_STATUSES = (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.RETRYING)
LIST_LIMIT_DEFAULT = 50
LIST_LIMIT_MAX = 200

User: TypeAlias = AbstractBaseUser | AnonymousUser


class JobNotFound(LookupError):
    """A malformed id, an unknown job, or one the user may not see: the message says which."""


def user_is_staff(user: User) -> bool:
    return bool(user.is_active and getattr(user, "is_staff", False))


def jobs_visible(*, user: User, listing: bool = False) -> QuerySet[JobRecord]:
    """The jobs ``user`` may read by id, or, with ``listing``, may see in lists."""
    records = JobRecord.objects.all()
    if user_is_staff(user):
        return records
    if not user.is_authenticated:
        return records.none() if listing else records.filter(owner__isnull=True)
    own = Q(owner_id=user.pk)
    return records.filter(own if listing else own | Q(owner__isnull=True))


def job_visible_get(*, user: User, job_id: str) -> JobRecord:
    """The job ``job_id`` if ``user`` may see it; else JobNotFound with a clear message."""
    try:
        job_id = job_id_parse(job_id)
    except DeadLetterError as exc:
        raise JobNotFound(str(exc)) from None
    record = jobs_visible(user=user).filter(id=job_id).first()
    if record is None:
        raise JobNotFound(f"no job {job_id}")
    return record


def job_cancel_allowed(*, user: User, record: JobRecord) -> bool:
    return user_is_staff(user) or (user.is_authenticated and record.owner_id == user.pk)


@dataclass(frozen=True)
class JobFilter:
    """The list filter of the jobs page and ``GET /api/jobs/``: status, task name part, limit."""

    status: str = ""
    task: str = ""
    limit: int = LIST_LIMIT_DEFAULT

    @classmethod
    def create(
        cls, *, status: str = "", task: str = "", limit: int = LIST_LIMIT_DEFAULT
    ) -> JobFilter:
        """The filter; ValueError with a clear message for a bad value."""
        status = status.strip()
        if status and status not in JobStatus.values:
            raise ValueError(
                f"unknown status {status!r}; the statuses are {', '.join(JobStatus.values)}"
            )
        if not 1 <= limit <= LIST_LIMIT_MAX:
            raise ValueError(f"limit must be a whole number from 1 to {LIST_LIMIT_MAX}")
        return cls(status=status, task=task.strip()[:200], limit=limit)

    @classmethod
    def from_query(cls, query: QueryDict) -> JobFilter:
        """Read ``?status=&task=&limit=`` of the jobs page."""
        raw_limit = query.get("limit", "").strip()
        try:
            limit = int(raw_limit) if raw_limit else LIST_LIMIT_DEFAULT
        except ValueError:
            limit = 0  # out of range: the same message as any other bad limit
        return cls.create(status=query.get("status", ""), task=query.get("task", ""), limit=limit)

    def apply(self, records: QuerySet[JobRecord]) -> list[JobRecord]:
        if self.status:
            records = records.filter(status=self.status)
        if self.task:
            records = records.filter(task_name__icontains=self.task)
        return list(records.order_by("-enqueued_at")[: self.limit])

    def query(self) -> dict[str, str]:
        """The filter as query parameters (empty ones left out)."""
        values = {"status": self.status, "task": self.task, "limit": str(self.limit)}
        return {k: v for k, v in values.items() if v}


def _iso(value: Any) -> str | None:
    return value.isoformat() if value else None


def job_json(record: JobRecord, *, traceback: bool = False) -> dict[str, Any]:
    """A job as the API returns it; the traceback only when asked (for staff)."""
    data = {
        "id": str(record.id),
        "task": record.task_name,
        "queue": record.queue,
        "summary": record.summary,
        "status": record.status,
        "final": record.status in FINAL_STATUSES,
        "progress": record.progress,
        "progress_message": record.progress_message,
        "attempts": record.attempts,
        "result": record.result,
        "error": record.error,
        "enqueued_at": _iso(record.enqueued_at),
        "started_at": _iso(record.started_at),
        "finished_at": _iso(record.finished_at),
        "correlation_id": record.correlation_id,
        "replay_of": str(record.replay_of_id) if record.replay_of_id else None,
        "cancel_requested": record.cancel_requested,
    }
    if traceback:
        data["traceback"] = record.traceback
    return data
