"""Progress reports from task code, throttled so that a loop never floods the database.

    for i, row in enumerate(rows):
        ...
        progress(100 * i / len(rows), "rows")

A write happens at most every PROGRESS_INTERVAL seconds (and at 100 %): a million-step loop
costs a handful of UPDATEs. Each write also checks for cancellation and raises ``JobCancelled``
when someone cancelled the job, so the loop stops cleanly.
"""

from __future__ import annotations

import threading
import time

from celery import current_task
from celery.exceptions import Ignore

from app.records import record_cancelled, record_progress

PROGRESS_INTERVAL = 0.5  # seconds


class JobCancelled(Ignore):
    """Raised in a job that was cancelled: the message is acknowledged, the job ends cancelled."""


#: When this thread last wrote progress. Checked before anything else, so that the calls in
#: between cost a clock read and a comparison. (A job's first report may come up to one interval
#: late if the thread's previous job just reported.)
_last_write = threading.local()


def progress(percent: float, message: str = "") -> None:
    """Report progress of the running tracked job; a no-op outside one."""
    now = time.monotonic()
    if percent < 100 and now - getattr(_last_write, "at", -PROGRESS_INTERVAL) < PROGRESS_INTERVAL:
        return
    task = current_task
    if not task or not getattr(task, "tracked", False) or not task.request.id:
        return
    _last_write.at = now
    whole = max(0, min(100, int(percent)))
    if record_progress(job_id=task.request.id, percent=whole, message=message):
        record_cancelled(job_id=task.request.id)
        raise JobCancelled(f"job {task.request.id} was cancelled")
