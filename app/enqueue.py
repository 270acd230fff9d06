"""Transactional enqueue: ``job_enqueue`` inside the caller's database transaction.

The job record (for tracked tasks) and an outbox row are written in that transaction. After
commit the message is published with publisher confirms and the row marked sent; if the broker
is down, the row stays and the relay (``manage.py relay_outbox``, and a periodic job) publishes it
later. If the transaction rolls back, nothing is published. Use plain ``task.delay()`` where
losing a message on a broker outage is acceptable: it is faster and needs no database.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from celery import Task
from celery.exceptions import QueueNotFound
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from app.context import MESSAGE_HEADER, correlation_id
from app.models import JobRecord, OutboxMessage
from app.outbox import outbox_publish_one
from app.records import arguments_summary
from config.celery import app as celery_app

#: Workers hold a message with an ETA unacknowledged until it is due, and RabbitMQ closes a
#: channel whose delivery stays unacknowledged for its consumer_timeout (30 minutes by default).
MAX_ETA_AHEAD = timedelta(minutes=25)


class EnqueueError(ValueError):
    """The job cannot be enqueued as asked: an unknown task, arguments that are not JSON..."""


def task_resolve(task: Task | str) -> Task:
    name = task if isinstance(task, str) else task.name
    try:
        return celery_app.tasks[name]
    except KeyError:
        raise EnqueueError(f"unknown task {name!r}: no module in tasks/ defines it") from None


def job_enqueue(
    task: Task | str,
    *,
    args: tuple[Any, ...] | list[Any] = (),
    kwargs: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    owner: User | None = None,
    eta: datetime | None = None,
    headers: dict[str, str] | None = None,
    using: str = "default",
) -> str:
    """Enqueue ``task`` in the current transaction; return the job id.

    With an ``idempotency_key``, enqueueing again returns the first job's id and enqueues nothing.
    ``headers`` go into the message (an engine part's, such as app/batches.py's batch id); the
    running task reads each as ``self.request.<name>``.
    """
    task = task_resolve(task)
    kwargs = kwargs or {}
    try:
        json.dumps([args, kwargs])
    except (TypeError, ValueError) as exc:
        raise EnqueueError(
            f"arguments of {task.name} must be JSON values (ids, not objects): {exc}"
        ) from None
    if idempotency_key is not None and not getattr(task, "tracked", False):
        raise EnqueueError(
            f"{task.name} is not tracked: declare it with tracked=True to use idempotency keys"
        )
    job_id = str(uuid.uuid4())
    cid = correlation_id() or job_id  # outside a request and a job, the root of its own story
    if eta is not None and eta - timezone.now() > MAX_ETA_AHEAD:
        raise EnqueueError(
            f"eta {eta.isoformat()} is more than {MAX_ETA_AHEAD} ahead: a worker would hold the "
            "message past RabbitMQ's consumer_timeout; schedule it with django-celery-beat"
        )
    try:
        route = celery_app.amqp.router.route(
            {"queue": task.queue} if getattr(task, "queue", None) else {},
            task.name,
            tuple(args),
            kwargs,
        )
    except QueueNotFound as exc:
        raise EnqueueError(f"{task.name} routes to a queue config/queues.py lacks: {exc}") from None
    queue = route["queue"].name
    with transaction.atomic(using=using):
        if getattr(task, "tracked", False):
            record = JobRecord(
                id=job_id,
                task_name=task.name,
                queue=queue,
                summary=arguments_summary(args, kwargs),
                payload={"args": list(args), "kwargs": kwargs},
                idempotency_key=idempotency_key,
                correlation_id=cid,
                owner=owner,
            )
            if idempotency_key is None:
                record.save(using=using, force_insert=True)
            else:
                try:
                    # A savepoint (two more round trips): a lost race keeps the caller's work.
                    with transaction.atomic(using=using):
                        record.save(using=using, force_insert=True)
                except IntegrityError:
                    first = JobRecord.objects.using(using).get(idempotency_key=idempotency_key)
                    return str(first.id)
        message = OutboxMessage.objects.using(using).create(
            task_id=job_id,
            task_name=task.name,
            args=list(args),
            kwargs=kwargs,
            options={
                "headers": {**(headers or {}), MESSAGE_HEADER: cid},
                "eta": eta.isoformat() if eta else None,
            },
        )
        transaction.on_commit(partial(outbox_publish_one, message_id=message.id), using=using)
    return job_id
