"""Batches with a callback: start one tracked job per item; once every one of them has ended,
succeeded or failed for good, one callback job runs with the lists of both.

    with transaction.atomic():
        batch_id, job_ids = batch_start(
            task="tasks.images.process",
            members=[{"source": path} for path in paths],
            callback="myapp.tasks.gallery_ready",  # a tracked task
            callback_kwargs={"gallery_id": 7},
        )
    # later, once: gallery_ready(gallery_id=7, batch_id=..., succeeded=[ids], failed=[ids])

Built on the job records rather than Celery's chord, which counts in the result backend and
whose callback a worker killed at the wrong moment can lose or run twice. Here:

- ``batch_start`` writes a ``Batch`` row (``remaining`` = the number of members), one
  ``BatchMember`` row per job, and enqueues the jobs with ``job_enqueue``, all in the caller's
  transaction; each message carries the batch id in its ``job_batch_id`` header (retries and
  redeliveries keep it).
- When a member job ends, the base task (``app.jobs.Job``: ``on_success``, ``on_failure`` and
  the dead-lettering in ``JobRequest.reject``) calls ``batch_member_end`` in one transaction
  with the job record's final write: the member row moves from ``pending`` by a conditional
  UPDATE, so a redelivered or twice-reported member counts once; only then is ``remaining``
  decremented, which also locks the batch row, so two members ending together are counted one
  after the other. The member that brings it to 0 enqueues the callback with ``job_enqueue``
  in that same transaction: the outbox publishes it after the commit, or the relay does later.
- A worker that dies before that transaction commits leaves the member's message
  unacknowledged: it is delivered again, runs again and ends the member then. One that dies
  after the commit leaves the record ended, the member counted and the callback in the outbox;
  the redelivered message is skipped (its record ended). Either way the callback is enqueued
  exactly once. Its own delivery is at least once, as every job's: make it tracked, so a
  redelivery after it ended is skipped, and idempotent.

Members are tracked tasks; failed means ``failed`` or ``dead`` (retries spent, or a permanent
error). A member whose final write fails (the database down at that moment, after the one
reconnect ``app.records`` tries) leaves the batch open; it is logged, and calling
``batch_member_end`` for it later finishes the batch. A cancelled member does not end its batch.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from celery import Task
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from app.enqueue import EnqueueError, job_enqueue, task_resolve
from app.models import Batch, BatchMember, BatchMemberState

#: The message header that names a member's batch (read as ``task.request.job_batch_id``).
BATCH_HEADER = "job_batch_id"


def batch_start(
    *,
    task: Task | str,
    members: Sequence[dict[str, Any]],
    callback: Task | str,
    callback_kwargs: dict[str, Any] | None = None,
) -> tuple[str, list[str]]:
    """Enqueue ``task`` once per kwargs in ``members``, and ``callback`` once they have all
    ended; return the batch id and the members' job ids. An empty batch enqueues its callback
    at once. Runs in the caller's transaction (or its own)."""
    member_task, callback_task = task_resolve(task), task_resolve(callback)
    for resolved in (member_task, callback_task):
        if not getattr(resolved, "tracked", False):
            raise EnqueueError(f"{resolved.name} is not tracked: batches need tracked tasks")
    batch_id = str(uuid.uuid4())
    with transaction.atomic():
        batch = Batch.objects.create(
            id=batch_id,
            callback=callback_task.name,
            callback_kwargs=callback_kwargs or {},
            size=len(members),
            remaining=len(members),
        )
        job_ids = [
            job_enqueue(member_task, kwargs=kwargs, headers={BATCH_HEADER: batch_id})
            for kwargs in members
        ]
        BatchMember.objects.bulk_create(
            BatchMember(job_id=job_id, batch=batch) for job_id in job_ids
        )
        if not members:
            _callback_enqueue(batch_id)
    return batch_id, job_ids


def batch_member_end(*, batch_id: str, job_id: str, succeeded: bool) -> bool:
    """Count a member's end once; enqueue the callback if it was the last. True if this call
    counted it (False: counted before, or not a member of that batch)."""
    state = BatchMemberState.SUCCEEDED if succeeded else BatchMemberState.FAILED
    with transaction.atomic():
        changed = BatchMember.objects.filter(
            job_id=job_id, batch_id=batch_id, state=BatchMemberState.PENDING
        ).update(state=state)
        if not changed:
            return False
        Batch.objects.filter(id=batch_id).update(remaining=F("remaining") - 1)
        if Batch.objects.filter(id=batch_id, remaining=0).exists():
            _callback_enqueue(batch_id)
    return True


def _callback_enqueue(batch_id: str) -> None:
    batch = Batch.objects.get(id=batch_id)
    members = BatchMember.objects.filter(batch_id=batch_id).order_by("job_id")
    ended: dict[str, list[str]] = {BatchMemberState.SUCCEEDED: [], BatchMemberState.FAILED: []}
    for job_id, state in members.values_list("job_id", "state"):
        ended[state].append(str(job_id))
    kwargs = {
        **batch.callback_kwargs,
        "batch_id": batch_id,
        "succeeded": ended[BatchMemberState.SUCCEEDED],
        "failed": ended[BatchMemberState.FAILED],
    }
    callback_job_id = job_enqueue(batch.callback, kwargs=kwargs)
    Batch.objects.filter(id=batch_id).update(
        callback_job_id=callback_job_id, ended_at=timezone.now()
    )


def batch_of(request: Any) -> str | None:
    """The batch id a job's message carries (a header), or None: from a running task's
    ``request``, or from the worker's request dict."""
    if isinstance(request, dict):
        value = request.get(BATCH_HEADER)
    else:
        value = getattr(request, BATCH_HEADER, None)
    return value if isinstance(value, str) and value else None
