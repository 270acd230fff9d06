"""The base class of every task (``config/celery.py`` makes it the app's ``task_cls``).

It adds defaults, not a framework: each is a plain Celery task option that a task overrides in
its own decorator, next to its code, e.g. ``@shared_task(autoretry_for=(httpx.TransportError,),
max_retries=3)``.

What happens to a job that raises:
- an exception in ``autoretry_for`` (transient): retried with exponential backoff and jitter,
  up to ``max_retries`` times; after that it fails like a permanent error;
- anything else (permanent, ``PermanentError`` included): it fails at once. Failed messages are
  rejected without requeue (``task_acks_on_failure_or_timeout=False``), so RabbitMQ moves them to
  ``<queue>.dead`` with an ``x-death`` header. They are never retried again by themselves.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from typing import Any

from billiard.einfo import ExceptionInfo
from celery import Task
from celery.exceptions import Ignore, Reject, TimeLimitExceeded, WorkerLostError
from celery.utils.time import get_exponential_backoff_interval
from celery.worker.request import Request
from django.db import transaction

from app import records
from app.batches import batch_member_end, batch_of
from app.context import correlation_id, job_fields
from app.errors import DATABASE_UNAVAILABLE, TRANSIENT_ERRORS, PermanentError

logger = logging.getLogger(__name__)


def failure_cause(exc: BaseException) -> str:
    """Why a job failed, in a word: "time-limit", "worker-lost" (killed, out of memory),
    "rejected" (it raised ``Reject``), or "exception" (its code raised anything else)."""
    if isinstance(exc, TimeLimitExceeded):
        return "time-limit"
    if isinstance(exc, WorkerLostError | SystemExit | KeyboardInterrupt):
        return "worker-lost"  # Celery reads the last two as a lost child too
    if isinstance(exc, Reject):
        return "rejected"
    return "exception"


class JobRequest(Request):
    """The worker's view of one message: logs dead-lettering, and dead-letters hard time-outs.

    Celery requeues a job killed by its hard time limit (or acks it, losing it, with
    ``acks_on_timeout``); requeued, it would hit the same limit forever. The soft limit, which
    the task can catch and clean up after, comes first.

    The dead-letter line is logged in the worker's main process, outside the job's own context:
    it carries the job's fields (app/context.py) itself, and the ``cause`` of the death, which
    decides whether it is the job's Sentry event (config/sentry.py).
    """

    _timed_out = False
    _cause = "unknown"

    def on_failure(self, exc_info: ExceptionInfo, *args: Any, **kwargs: Any) -> None:
        exc = getattr(exc_info.exception, "exc", exc_info.exception)  # ExceptionWithTraceback
        self._timed_out = isinstance(exc, TimeLimitExceeded)
        self._cause = failure_cause(exc)
        super().on_failure(exc_info, *args, **kwargs)

    def on_timeout(self, soft: bool, timeout: float) -> None:
        self._timed_out = self._timed_out or not soft
        if not soft:
            self._cause = "time-limit"
        super().on_timeout(soft, timeout)

    def reject(self, requeue: bool = False) -> None:
        requeue = requeue and not self._timed_out
        if not requeue and not self.acknowledged:
            queue = self.delivery_info.get("routing_key", "?")
            logger.error(
                "%s[%s] dead-lettered to %s.dead",
                self.name,
                self.id,
                queue,
                extra={
                    **job_fields(self._context, self.name),
                    "dead_lettered_to": f"{queue}.dead",
                    "cause": self._cause,
                },
            )
            if getattr(self.task, "tracked", False):
                _write_record(
                    _ending(
                        records.record_dead_lettered, batch_of(self.request_dict), succeeded=False
                    ),
                    job_id=self.id,
                    reason=f"dead-lettered to {queue}.dead",
                )
        super().reject(requeue=requeue)


#: Options Celery reads from a task's decorator that are not attributes of its Task class
#: (celery/app/task.py ``extract_exec_options``, celery/app/autoretry.py).
CELERY_OPTIONS = frozenset(
    {"queue", "routing_key", "exchange", "exchange_type", "delivery_mode", "compression",
     "immediate", "mandatory", "retry_kwargs", "autoretry_for", "dont_autoretry_for",
     "retry_backoff", "retry_backoff_max", "retry_jitter",
     *(name for name, _ in Task.from_config)}  # read from the app's conf when not set
)  # fmt: skip
#: What Celery's ``_task_from_fun`` puts in every decorated task class besides the options.
DECORATED_CLASS_KEYS = frozenset(
    {"app", "name", "run", "_decorated", "_decorated_fun", "_dump_pydantic_arguments",
     "__doc__", "__module__", "__annotations__", "__header__", "__wrapped__", "__qualname__"}
)  # fmt: skip


class UnknownTaskOption(TypeError):
    """A decorator option no part of Celery or this project reads: a typo, caught at import."""


class Job(Task):
    """Project defaults for retries and dead-lettering; see the module docstring."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse options nothing reads: ``@shared_task(trackd=True)`` would otherwise do nothing.

        Celery makes each decorated function a subclass with the options as class attributes,
        when the module is imported (the app is finalized first, in app/apps.py). Task classes
        written by hand may add what they like.
        """
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("_decorated"):
            return
        parent = cls.__mro__[1]
        for option in cls.__dict__:
            if option in DECORATED_CLASS_KEYS or option in CELERY_OPTIONS:
                continue
            if hasattr(parent, option):
                continue
            known = [*CELERY_OPTIONS, *(n for n in dir(parent) if not n.startswith("_"))]
            close = difflib.get_close_matches(option, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UnknownTaskOption(
                f"task {cls.__dict__.get('name')!r}: unknown option {option!r}{hint}"
            )

    Request = "app.jobs:JobRequest"

    #: Transient failures. Builtin ConnectionError and TimeoutError cover sockets and most clients.
    #: A task that sets its own autoretry_for replaces this: extend TRANSIENT_ERRORS instead.
    autoretry_for: tuple[type[BaseException], ...] = TRANSIENT_ERRORS
    dont_autoretry_for: tuple[type[BaseException], ...] = (PermanentError,)
    #: Delays of up to 1, 2, 4 ... seconds, capped at retry_backoff_max, with full jitter so that
    #: jobs failing together do not retry together. 10 retries span about 17 minutes at most.
    retry_backoff = True
    retry_backoff_max = 600  # stays well under RabbitMQ's 30-minute consumer_timeout
    retry_jitter = True
    max_retries = 10
    #: Delay of a plain ``self.retry()`` and of the retry after a worker process was lost.
    default_retry_delay = 5

    #: Keep a job record (status, progress, result) for this task: on for work a user waits for.
    tracked = False

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        if not self.tracked:
            return
        try:
            started = records.record_start(
                job_id=task_id,
                task_name=self.name,
                queue=(self.request.delivery_info or {}).get("routing_key", ""),
                args=args,
                kwargs=kwargs,
                correlation_id=correlation_id(),
            )
        except DATABASE_UNAVAILABLE as exc:
            # Not the job's fault: without this, a database restart dead-letters every tracked
            # job that starts meanwhile. Retried like a transient error, with backoff.
            raise self.retry(exc=exc, countdown=self.backoff(self.request.retries)) from exc
        if not started:
            logger.info("job already ended; redelivered message acknowledged and skipped")
            raise Ignore()

    def backoff(self, retries: int) -> int:
        """Seconds before retry number ``retries + 1``, as autoretry computes them (with jitter:
        jobs that failed together must not all come back together)."""
        return get_exponential_backoff_interval(
            factor=int(self.retry_backoff) or 1,
            retries=retries,
            maximum=self.retry_backoff_max,
            full_jitter=self.retry_jitter,
        )

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        if self.tracked:
            write = _ending(records.record_succeed, batch_of(self.request), succeeded=True)
            _write_record(write, job_id=task_id, result=retval)

    def on_retry(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: ExceptionInfo
    ) -> None:
        logger.warning("transient failure, will retry: %s: %s", type(exc).__name__, exc)
        if self.tracked:
            _write_record(
                records.record_retry, job_id=task_id, error=_error(exc), traceback=str(einfo)
            )

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: ExceptionInfo
    ) -> None:
        if self.tracked:
            dead = bool(self.acks_late and not self.acks_on_failure)
            _write_record(
                _ending(records.record_fail, batch_of(self.request), succeeded=False),
                job_id=task_id,
                error=_error(exc),
                traceback=str(einfo),
                dead=dead,
            )


def _write_record(write: Callable[..., None], **fields: Any) -> None:
    """Write a job's outcome; when that fails, log it and let the message go on.

    What happens to the message (ack, retry, dead letter) must not depend on the record: an
    exception here would turn a job that succeeded, or is being retried, into a failure, or
    leave a rejected message unacknowledged. (A broken connection was already replaced once:
    see ``records._reconnecting``.)
    """
    try:
        write(**fields)
    except Exception:
        logger.exception("job record not updated (%s)", write.__name__)


def _ending(
    write: Callable[..., None], batch_id: str | None, *, succeeded: bool
) -> Callable[..., None]:
    """``write``, a job's final record write, and for a member of a batch (app/batches.py) its
    end, in one transaction: a worker that dies in between cannot leave the record ended and the
    member pending (the redelivered message would be skipped, and the batch never end)."""
    if batch_id is None:
        return write

    def write_and_end(**fields: Any) -> None:
        with transaction.atomic():
            write(**fields)
            batch_member_end(batch_id=batch_id, job_id=fields["job_id"], succeeded=succeeded)

    write_and_end.__name__ = write.__name__
    return write_and_end


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
