"""Sync jobs, on the ``api`` queue (config/queues.py routes ``tasks.syncs.*`` there). Start one
with ``POST /api/syncs/`` or ``services.sync_start``; the schedule below runs one periodically.

One retry layer: a timeout, a broken connection or a 5xx raises TransientError, retried with
the base job's exponential backoff and jitter (``self.backoff``); a 429 (or a 503 with
Retry-After) after the server's Retry-After instead. Both through ``self.retry(countdown=...)``,
which lets the run's lease be held for the wait. Anything else is
permanent: the job is dead-lettered and the sync keeps its checkpoint for the next run."""

from __future__ import annotations

import logging
from typing import Any, NoReturn

from celery import Task, shared_task
from celery.exceptions import Ignore

from app.errors import PermanentError, TransientError
from tasks.syncs import conf
from tasks.syncs.services import (
    CopyAhead,
    RetryLater,
    lease_extend,
    lease_release,
    part_end,
    part_run,
    sync_fan_out,
    sync_finish,
    sync_run,
)

logger = logging.getLogger(__name__)

#: This family's periodic jobs, copied into django-celery-beat by ``manage.py sync_schedule``
#: (edit or switch them off in the admin: Periodic tasks). A run still going when the next one
#: is due refuses the newcomer.
SCHEDULE: dict[str, dict[str, Any]] = {
    "syncs: contacts every hour": {
        "task": "tasks.syncs.run",
        "crontab": {"minute": "23"},
        "kwargs": {"name": "contacts"},
    },
}


def _retry_later(task: Task, exc: TransientError, *, name: str, job_id: str) -> Exception:
    """The retry: after the server's Retry-After (a 429), else the base job's backoff and
    jitter. The run's lease is held that much longer: a backoff can be as long as the lease, and
    a lease that lapsed let another run take the sync beside this one (or beside its parts)."""
    delay = exc.delay if isinstance(exc, RetryLater) and exc.delay is not None else None
    if delay is None:
        delay = task.backoff(task.request.retries)
    lease_extend(name=name, job_id=job_id, seconds=delay)
    return task.retry(exc=exc, countdown=delay)  # raises Retry; MaxRetriesExceeded past the last


def _retry(task: Task, exc: TransientError, *, name: str) -> NoReturn:
    """A run's page failed for now: its retry (the base job's, or after Retry-After). Past the
    last retry the run lets the sync go (keeping its cursor) and fails."""
    job_id = task.request.id
    if task.request.retries >= (task.max_retries or 0):
        lease_release(name=name, job_id=job_id, error=f"gave up: {exc}")
        raise exc
    raise _retry_later(task, exc, name=name, job_id=job_id) from exc


def _copy_ahead(exc: CopyAhead) -> Ignore:
    """This copy stops, acknowledged, leaving the record and the lease to the copy ahead."""
    logger.warning("%s", exc)
    return Ignore()


@shared_task(bind=True, tracked=True, max_retries=conf.MAX_RETRIES)
def run(self: Task, name: str) -> dict[str, Any]:
    """Run (or resume, from its checkpoint) the sync ``name``; the result is its counts."""
    try:
        return sync_run(name=name, job_id=self.request.id)
    except CopyAhead as exc:
        raise _copy_ahead(exc) from exc
    except TransientError as exc:
        _retry(self, exc, name=name)


@shared_task(bind=True, tracked=True, max_retries=conf.MAX_RETRIES)
def fan_out(self: Task, name: str, parts: int = 4) -> dict[str, Any]:
    """Run the sync ``name`` as ``parts`` parallel jobs over page ranges. The record stays
    running until the final callback (``finish``) ends it with the counts of every part."""
    try:
        outcome = sync_fan_out(name=name, job_id=self.request.id, parts=parts)
    except CopyAhead as exc:
        raise _copy_ahead(exc) from exc
    except TransientError as exc:
        _retry(self, exc, name=name)
    if outcome.get("parts"):
        raise Ignore()  # acknowledged; the record is ended by ``finish``
    return outcome


@shared_task(bind=True, max_retries=conf.MAX_RETRIES)
def part(self: Task, name: str, job_id: str, index: int) -> dict[str, Any]:
    """One page range of a fanned-out run. A part that fails for good ends as failed, and the
    run with it (by the final callback, naming the part)."""
    try:
        return part_run(name=name, job_id=job_id, index=index)
    except CopyAhead as exc:
        raise _copy_ahead(exc) from exc
    except TransientError as exc:  # RetryLater (a 429) too
        if self.request.retries < self.max_retries:
            raise _retry_later(self, exc, name=name, job_id=job_id) from exc
        error = f"gave up after {self.request.retries} retries: {exc}"
    except PermanentError as exc:
        error = str(exc)
    logger.error("sync %s part %d failed: %s", name, index, error)
    part_end(name=name, job_id=job_id, index=index, error=error)
    return {"error": error}


@shared_task
def finish(name: str, job_id: str) -> dict[str, Any]:
    """The final callback of a fanned-out run (enqueued once, by the last part to end)."""
    return sync_finish(name=name, job_id=job_id)
