"""One logging setup for the web app, the workers and beat: every record, whoever logs it (Django,
Celery, waitress, our code through ``logging`` or ``structlog``), goes through the same structlog
processors, and comes out as one JSON object per line (``LOG_FORMAT=json``, the default when
DEBUG is off) or as a readable line (``console``, the default with DEBUG on).

Each line carries, besides time, level, logger and message: inside a job, ``task_id``, ``task``,
``attempt``, ``queue`` and ``correlation_id`` (app/context.py); outside one, the correlation id
of the request being served. So a job's story is one search away, by ``task_id`` for one job or
by ``correlation_id`` for a request and every job it caused.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from app.context import job_context

LOG_FORMATS = ("json", "console")

#: The attributes every ``LogRecord`` has: anything else on a record was passed in ``extra``.
_RECORD_ATTRIBUTES = frozenset(
    {
        *logging.LogRecord("", 0, "", 0, "", (), None).__dict__,
        "message",
        "asctime",
        "_logger",
        "_name",
    }
)
#: Extras never written. Celery passes ``data`` with every task line it logs: the job's
#: arguments among other things, and arguments may be personal data.
_EXTRAS_DROPPED = frozenset({"data"})


def add_job_context(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """The running job's fields, or the request's correlation id (see the module docstring)."""
    event_dict.update(job_context())
    return event_dict


def add_record_fields(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """From the ``logging`` record: the process name (``MainProcess``, ``ForkPoolWorker-1``), and
    what the caller passed in ``extra``. An extra never replaces a field set above it.

    Celery logs a task's lines in the worker's main process ("received", a lost worker, a hard
    time limit) with the task's id and name in ``extra["data"]``: those become ``task_id`` and
    ``task`` when no job runs in this thread.
    """
    record: logging.LogRecord | None = event_dict.get("_record")
    if record is None:
        return event_dict
    event_dict.setdefault("process", record.processName)
    for key, value in record.__dict__.items():
        if key not in _RECORD_ATTRIBUTES and key not in _EXTRAS_DROPPED:
            event_dict.setdefault(key, value)
    data = record.__dict__.get("data")
    if "task_id" not in event_dict and isinstance(data, dict) and "id" in data:
        event_dict["task_id"] = data["id"]
        if "name" in data:
            event_dict["task"] = data["name"]
    return event_dict


def message_first(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """``timestamp``, ``level``, ``logger`` and ``message`` (structlog's ``event``) lead each
    JSON object, the job's fields next: the order a reader of a raw line looks for them."""
    head = {
        key: event_dict.pop(key) for key in ("timestamp", "level", "logger") if key in event_dict
    }
    head["message"] = event_dict.pop("event", "")
    head.update(event_dict)
    return head


def _repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:  # a broken __repr__ must not cost the line
        return f"<{type(value).__name__} object>"


def _plain(value: object) -> object:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return _repr(value)


def json_line(event_dict: EventDict, **kwargs: Any) -> str:
    """The event as one line of JSON, whatever its values: ASCII only (so no character in it, a
    lone surrogate included, can be an encoding error or a line break), objects JSON does not
    know as their repr, and, should the whole still not encode (a key that is not a string, a
    NaN, a cycle, nesting too deep), each top-level value that is not a plain scalar as its repr.
    A log line is never lost or split over lines."""
    try:
        return json.dumps(event_dict, default=_repr, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return json.dumps(
            {_repr(k) if not isinstance(k, str) else k: _plain(v) for k, v in event_dict.items()}
        )


def shared_processors() -> list[Processor]:
    """Run on every event first: for records from ``logging`` by the formatter, for
    ``structlog.get_logger()`` events by structlog itself."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
    ]


def formatter(*, log_format: str) -> structlog.stdlib.ProcessorFormatter:
    """The one formatter every handler uses; ``log_format`` is one of ``LOG_FORMATS``."""
    renderer: list[Processor]
    if log_format == "json":
        renderer = [
            structlog.processors.format_exc_info,
            message_first,
            structlog.processors.JSONRenderer(serializer=json_line),
        ]
    else:
        renderer = [
            structlog.dev.ConsoleRenderer(
                colors=sys.stderr.isatty(),
                sort_keys=False,
                exception_formatter=structlog.dev.plain_traceback,
            )
        ]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared_processors(),
        processors=[
            add_job_context,
            add_record_fields,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *renderer,
        ],
    )


def logging_setup() -> None:
    """What ``LOGGING`` cannot say: ``structlog.get_logger()`` loggers hand their events to
    ``logging``, whose handlers render them with the formatter above (one pipeline, one
    output); Python's warnings (a deprecation, whitenoise's missing static directory) are log
    records too, not raw text on stderr. Django no longer routes warnings so itself."""
    logging.captureWarnings(True)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def logging_config(*, level: str, log_format: str) -> dict[str, Any]:
    """The ``LOGGING`` dict for Django; Celery workers and beat use it too (config/celery.py)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structured": {"()": formatter, "log_format": log_format}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "celery": {"level": level},
            "django": {"level": level},
            "amqp": {"level": "WARNING"},
            "kombu": {"level": "WARNING"},
        },
    }
