"""Log configuration: one line per event, with the job it belongs to.

Every record gets ``task_id``, ``task`` and ``attempt`` from the Celery task running in this
thread or process (``-`` outside a task), so ``grep task_id=<id>`` finds a job's whole story across
the web, the worker and its retries; ``correlation_id`` links it to the request that caused it.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import current_task

from app.context import correlation_id


class TaskContextFilter(logging.Filter):
    """Adds the current task's id, name and attempt number to every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = current_task.request if current_task else None  # the proxy is falsy outside
        if request is not None and request.id:
            record.task_id = request.id
            record.task = current_task.name
            record.attempt = (request.retries or 0) + 1
        else:
            record.task_id = record.task = record.attempt = "-"
        record.correlation_id = correlation_id() or "-"
        return True


FORMAT = (
    "%(asctime)s %(levelname)s %(name)s [%(processName)s] "
    "task_id=%(task_id)s task=%(task)s attempt=%(attempt)s correlation_id=%(correlation_id)s "
    "%(message)s"
)


def logging_config(*, level: str) -> dict[str, Any]:
    """The ``LOGGING`` dict for Django; Celery workers use it too (see config/celery.py)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"task_context": {"()": TaskContextFilter}},
        "formatters": {"line": {"format": FORMAT}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "line",
                "filters": ["task_context"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "celery": {"level": level},
            "django": {"level": level},
            "amqp": {"level": "WARNING"},
            "kombu": {"level": "WARNING"},
        },
    }
