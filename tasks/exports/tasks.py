"""Export jobs, on the ``exports`` queue (config/queues.py: ``tasks.exports.*``), served by the
CPU worker (bin/worker-cpu). Thin: the logic is in ``services.py``."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from tasks.exports.services import export_run, exports_prune

#: This family's periodic jobs, copied into django-celery-beat by ``manage.py sync_schedule``.
SCHEDULE: dict[str, dict[str, Any]] = {
    "exports: remove expired files": {
        "task": "tasks.exports.prune",
        "crontab": {"minute": "40", "hour": "*"},
    },
}


#: An export of millions of rows outlasts the project's 5-minute default: XLSX writes some
#: tens of thousands of rows a second (the README's benchmarks).
TIME_LIMIT = 2 * 60 * 60


@shared_task(bind=True, tracked=True, soft_time_limit=TIME_LIMIT, time_limit=TIME_LIMIT + 60)
def run(
    self: Task,
    *,
    export: str,
    format: str,
    gzip: bool,
    filters: dict[str, Any],
    token: str,
    owner_id: int | None = None,
) -> dict[str, Any]:
    """Write one export (enqueue it with ``services.export_start``). A database or storage
    connection error is retried with the base job's backoff; anything else fails it."""
    return export_run(
        job_id=str(self.request.id),
        export=export,
        format=format,
        gzip=gzip,
        filters=filters,
        token=token,
        owner_id=owner_id,
    )


@shared_task(tracked=True)  # its outcome shows in the periodic tasks admin
def prune() -> int:
    """Remove expired export files (hourly)."""
    return exports_prune()
