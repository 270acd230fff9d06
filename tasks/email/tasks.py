"""Email jobs, on the ``email`` queue (config/queues.py: ``tasks.email.*``). Thin: the logic
is in ``services.py`` (one email) and ``bulk.py`` (many)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from billiard.einfo import ExceptionInfo
from celery import Task, shared_task
from celery.exceptions import Ignore
from django.utils import timezone

from app.jobs import Job
from tasks.email import conf
from tasks.email.bulk import (
    batch_abandon,
    batch_send,
    bulk_fan_out,
    bulks_prune,
    bulks_sweep,
)
from tasks.email.services import email_deliver

#: This family's periodic jobs, copied into django-celery-beat by ``manage.py sync_schedule``.
SCHEDULE: dict[str, dict[str, Any]] = {
    "email: prune ended bulk sends": {
        "task": "tasks.email.prune",
        "crontab": {"minute": "20", "hour": "3"},
    },
}


@shared_task(bind=True, tracked=True)
def send(self: Task, **spec: Any) -> dict[str, Any]:
    """One email (enqueue it with ``services.email_send``). SMTP 4xx and connection errors are
    retried with the base job's backoff; a 5xx or refused credentials fail it at once."""
    return email_deliver(job_id=self.request.id, spec=spec)


@shared_task(bind=True, tracked=True)
def bulk(self: Task) -> None:
    """Start a bulk send (enqueue it with ``bulk.bulk_start``): one ``send_batch`` per batch.

    The bulk's id is this job's id. Its record stays running after this returns: the batch that
    ends the last recipient ends it, with the counts. ``Ignore`` acknowledges the message
    without ending the record (Celery's documented way to do so).
    """
    bulk_fan_out(bulk_id=self.request.id)
    raise Ignore()


class BatchJob(Job):
    """A batch job that ends for good (dead-lettered: an unexpected error, retries used up) fails
    the recipients it left, so that its bulk send still ends and says why."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: ExceptionInfo
    ) -> None:
        super().on_failure(exc, task_id, args, kwargs, einfo)
        batch_abandon(
            bulk_id=kwargs["bulk_id"], batch=kwargs["batch"], error=f"{type(exc).__name__}: {exc}"
        )


#: Batches retry for about 17 minutes (the base job's backoff) before their remaining
#: recipients fail; a deferral (SMTP 4xx) is usually over in minutes.
@shared_task(bind=True, base=BatchJob)
def send_batch(self: Task, bulk_id: str, batch: int) -> dict[str, int]:
    """One batch of a bulk send over one SMTP connection, at the shared send rate."""
    final = self.request.retries >= (self.max_retries or 0)
    return batch_send(bulk_id=bulk_id, batch=batch, final_attempt=final)


@shared_task(tracked=True)  # its outcome shows in the periodic tasks admin
def prune() -> dict[str, int]:
    """End bulk sends no batch has moved for a day (a batch lost after its last retry), then
    delete those ended EMAIL_RETENTION_DAYS ago, with their recipients' addresses."""
    now = timezone.now()
    return {
        "abandoned": bulks_sweep(idle_since=now - timedelta(days=1)),
        "pruned": bulks_prune(before=now - timedelta(days=conf.RETENTION_DAYS)),
    }
