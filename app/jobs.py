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

import logging
from typing import Any

from billiard.einfo import ExceptionInfo
from celery import Task
from celery.worker.request import Request

from app.errors import PermanentError, TransientError

logger = logging.getLogger(__name__)


class JobRequest(Request):
    """Dead-letters a job killed by its hard time limit.

    Celery requeues such a message (or acks it, losing it, with ``acks_on_timeout``); requeued,
    it would hit the same limit forever. The soft limit, which the task can catch, comes first.
    """

    _hard_time_limit_hit = False

    def on_timeout(self, soft: bool, timeout: float) -> None:
        if not soft:
            self._hard_time_limit_hit = True
        super().on_timeout(soft, timeout)

    def reject(self, requeue: bool = False) -> None:
        super().reject(requeue=requeue and not self._hard_time_limit_hit)


class Job(Task):
    """Project defaults for retries and dead-lettering; see the module docstring."""

    Request = JobRequest

    #: Transient failures. Builtin ConnectionError and TimeoutError cover sockets and most clients.
    autoretry_for: tuple[type[BaseException], ...] = (TransientError, ConnectionError, TimeoutError)
    dont_autoretry_for: tuple[type[BaseException], ...] = (PermanentError,)
    #: Delays of up to 1, 2, 4 ... seconds, capped at retry_backoff_max, with full jitter so that
    #: jobs failing together do not retry together. 10 retries span about 17 minutes at most.
    retry_backoff = True
    retry_backoff_max = 600  # stays well under RabbitMQ's 30-minute consumer_timeout
    retry_jitter = True
    max_retries = 10

    def on_retry(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: ExceptionInfo
    ) -> None:
        logger.warning("transient failure, will retry: %s: %s", type(exc).__name__, exc)

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: ExceptionInfo
    ) -> None:
        queue = (self.request.delivery_info or {}).get("routing_key", "?")
        logger.error(
            "job failed for good, dead-lettered to %s.dead: %s: %s",
            queue,
            type(exc).__name__,
            exc,
        )
