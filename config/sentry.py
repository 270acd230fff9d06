"""Sentry, with its Django and Celery integrations when SENTRY_DSN is set; else not at all.

What reaches Sentry: final failures (a job that gave up, a request that crashed) with their task
or request context, and the check-ins of beat jobs (Sentry Crons). Not sent: personal data,
which a job's arguments may hold.

A job reaches Sentry once, when it ends dead, never for a retry:
- a job whose code raised (a permanent error, its retries used up): the Celery integration
  reports the exception, with its stack trace, from the process that ran it. A retry raises
  Celery's ``Retry``, which it does not report.
- a job that ended dead without raising in its own process (its hard time limit, its worker
  lost on the last attempt, ``Reject``): the dead-letter line (app/jobs.py) is the event; its
  ``cause`` says which. For ``cause == "exception"`` that line is dropped here, the Celery
  integration having reported the exception itself. Celery's own error lines about such ends
  ("Hard time limit exceeded", "Task handler raised error", a pool child that exited) would be
  second events, or one per attempt: they are not sent.

Each event is tagged with the job's ``task``, ``task_id``, ``attempt``, ``queue`` and
``correlation_id`` (or a web request's correlation id): the names of the fields of log lines.
"""

from __future__ import annotations

import sentry_sdk
from celery.signals import task_retry
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.celery.beat import crons_task_retry
from sentry_sdk.integrations.django import DjangoIntegration
from sentry_sdk.integrations.logging import ignore_logger
from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber
from sentry_sdk.types import Event, Hint

from app.context import job_context

#: The keys under which Celery's own log records carry a job's arguments (the worker's "Task ...
#: received" line, its failure reports); Sentry takes log records as breadcrumbs and extras.
JOB_ARGUMENT_KEYS = ["args", "kwargs", "argsrepr", "kwargsrepr"]
#: The tags that place an event in a job's story.
JOB_TAGS = ("task", "task_id", "attempt", "queue", "correlation_id")


def init_sentry(*, dsn: str, environment: str, traces_sample_rate: float) -> bool:
    """Start Sentry if a DSN is configured. Returns whether it was started."""
    if not dsn:
        return False
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        traces_sample_rate=traces_sample_rate,
        # Job arguments may hold personal data; send ids and context, not user payloads (the
        # Celery integration then sends "[Filtered]" for the arguments).
        send_default_pii=False,
        # ...nor the local variables of each frame, where the task function holds its arguments
        # (and the worker's frames the whole message).
        include_local_variables=False,
        # ...nor the arguments Celery's log records carry, at any depth.
        event_scrubber=EventScrubber(
            denylist=[*DEFAULT_DENYLIST, *JOB_ARGUMENT_KEYS], recursive=True
        ),
        # ...nor what users post (a form, a JSON body) with a request that crashed.
        max_request_body_size="never",
        before_send=event_prepare,
        integrations=[
            DjangoIntegration(),
            # Beat schedules show up as Sentry cron monitors: beat sends the "in progress"
            # check-in as it sends a job, the worker "ok" or "error" when the job ends.
            CeleryIntegration(monitor_beat_tasks=True),
        ],
    )
    # A job that will be retried has not failed yet, but the integration checks in "error" on
    # every retry: Sentry would count the run failed, and may alert, for a transient failure the
    # retry then mends. Without it the run stays in progress until its final attempt checks in.
    task_retry.disconnect(crons_task_retry)
    # The worker's own lines about a job that ended ("Task handler raised error", "Hard time
    # limit exceeded") and the pool's about the child it lost meanwhile ("Process
    # 'ForkPoolWorker-1' ... exited with 'signal 9'", on each attempt, retried or not) duplicate
    # the dead-letter line; see the module docstring. They stay in the logs.
    ignore_logger("celery.worker.request")
    ignore_logger("multiprocessing")  # billiard's, the prefork pool's
    return True


def event_prepare(event: Event, hint: Hint) -> Event | None:
    """Sentry's ``before_send``: drops the dead-letter line of a job whose exception was
    reported already; tags every event with the job (or request) it belongs to."""
    record = hint.get("log_record")  # None for an exception the SDK caught
    dead_letter = getattr(record, "dead_lettered_to", None) is not None
    cause = getattr(record, "cause", None)
    if dead_letter and cause == "exception":
        return None
    fields = job_context()
    if record is not None:  # a line logged outside the job's thread carries them as extras
        for name in JOB_TAGS:
            if name not in fields and getattr(record, name, None) is not None:
                fields[name] = getattr(record, name)
    tags = event.setdefault("tags", {})
    for name in JOB_TAGS:
        if name in fields:
            tags.setdefault(name, str(fields[name]))
    if dead_letter:  # one issue per task and cause, not one per message text
        event["fingerprint"] = ["dead-lettered", str(fields.get("task")), str(cause)]
    return event
