"""Progress reports from task code, throttled so that a loop never floods the database.

    for i, row in enumerate(rows):
        ...
        progress(100 * i / len(rows), "rows")

A write happens at most every PROGRESS_INTERVAL seconds (and at 100 %): a million-step loop
costs a handful of UPDATEs. Each write also checks for cancellation and raises ``JobCancelled``
when someone cancelled the job, so the loop stops cleanly.
"""

from __future__ import annotations

import time

from celery import current_task
from celery.exceptions import Ignore

from app.records import record_cancelled, record_progress

PROGRESS_INTERVAL = 0.5  # seconds


class JobCancelled(Ignore):
    """Raised in a job that was cancelled: the message is acknowledged, the job ends cancelled."""


def progress(percent: float, message: str = "") -> None:
    """Report progress of the running tracked job; a no-op outside one."""
    task = current_task
    if not task or not getattr(task, "tracked", False) or not task.request.id:
        return
    request = task.request
    now = time.monotonic()
    whole = max(0, min(100, int(percent)))
    last = getattr(request, "_progress_written_at", None)
    if last is not None and now - last < PROGRESS_INTERVAL and whole < 100:
        return
    request._progress_written_at = now
    if record_progress(job_id=request.id, percent=whole, message=message):
        record_cancelled(job_id=request.id)
        raise JobCancelled(f"job {request.id} was cancelled")
