"""The correlation id: which request caused a job (and the jobs it enqueued in turn).

It is set for each web request (the proxy's X-Request-ID, or a new id); a message published
outside a request and a job (beat, a shell, a management command) uses its own id.
Every message published while it is set carries it in a header: ``job_enqueue`` writes it, and a
``before_task_publish`` receiver adds it to any other publish (``delay()``, a retry, the next
task of a chain). A worker reads it from the running task's headers, so a job enqueued by a job
keeps the request's id. Logs, job records and Sentry events carry it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from celery import current_task, signals
from django.core.signals import request_finished, request_started
from django.dispatch import receiver

if TYPE_CHECKING:  # config/logging.py imports this module while settings load
    from celery.app.task import Context
    from django.http import HttpRequest, HttpResponse

HEADER = "X-Request-ID"
#: The message header that carries it. Not "correlation_id": Celery uses that name for the task id.
MESSAGE_HEADER = "job_correlation_id"
_VALID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_request_correlation_id: ContextVar[str] = ContextVar("correlation_id", default="")


def _from_headers(request: Context) -> str:
    value = getattr(request, MESSAGE_HEADER, None) or ""
    if not isinstance(value, str) or not _VALID.fullmatch(value):
        return ""  # a message's headers are input: one that does not fit is dropped
    return value


def correlation_id() -> str:
    """The current request's id, or the running task's, or "" outside both."""
    value = _request_correlation_id.get()
    if not value and current_task:
        value = _from_headers(current_task.request)
    return value


@contextmanager
def correlation_id_set(value: str) -> Iterator[None]:
    """Make ``value`` the current correlation id inside the block (a request, a replay)."""
    token = _request_correlation_id.set(value)
    try:
        yield
    finally:
        _request_correlation_id.reset(token)


def job_fields(request: Context, task_name: str) -> dict[str, Any]:
    """What places a line or an error report in a job's story: its id, task, attempt (1 for the
    first run), queue, and the correlation id it carries, when it carries one."""
    fields: dict[str, Any] = {
        "task_id": request.id,
        "task": task_name,
        "attempt": (request.retries or 0) + 1,
    }
    queue = (request.delivery_info or {}).get("routing_key")
    if queue:  # none for a task run in-process (apply())
        fields["queue"] = queue
    cid = _from_headers(request)
    if cid:
        fields["correlation_id"] = cid
    return fields


def job_context() -> dict[str, Any]:
    """``job_fields`` of the task running in this thread; outside a task, the correlation id of
    the request being served, if any."""
    fields: dict[str, Any] = {}
    task = current_task._get_current_object()  # None outside a task; one lookup, not three
    if task is not None and task.request.id:
        fields = job_fields(task.request, task.name)
    cid = _request_correlation_id.get()  # set inside a job too by correlation_id_set
    if cid:
        fields["correlation_id"] = cid
    return fields


@signals.before_task_publish.connect
def correlation_id_stamp(headers: dict[str, Any], **kwargs: Any) -> None:
    """Every message published inside a request or a job carries its correlation id, however it
    is published. A message that has the header already keeps it (``job_enqueue`` writes it, a
    retry copies it, the outbox relay publishes rows written by others). One sent outside both
    (by beat, a shell) is the root of its own story: its own id is the correlation id of its
    lines and of the jobs it enqueues (``job_enqueue`` applies the same rule)."""
    if MESSAGE_HEADER not in headers:
        cid = correlation_id() or _root_id(headers)
        if cid:
            headers[MESSAGE_HEADER] = cid


def _root_id(headers: dict[str, Any]) -> str:
    """The id of the story a message without a correlation id starts: the running job's (a job
    whose own message had none), else the message's own."""
    task = current_task._get_current_object()
    value = task.request.id if task is not None and task.request.id else headers.get("id")
    return value if isinstance(value, str) and _VALID.fullmatch(value) else ""


def _incoming(value: str) -> str:
    """A well-formed X-Request-ID from the proxy, or a new id."""
    return value if _VALID.fullmatch(value) else uuid.uuid4().hex


@receiver(request_started)
def request_correlation_begin(environ: dict[str, Any] | None = None, **kwargs: Any) -> None:
    """The id is set when Django starts on a WSGI request, not in the middleware only: Django
    logs a response's status (a 404, a 500 with its traceback) after the middleware returned."""
    if environ is not None:  # under ASGI, the middleware sets it
        _request_correlation_id.set(_incoming(environ.get("HTTP_X_REQUEST_ID", "")))


@receiver(request_finished)
def request_correlation_end(**kwargs: Any) -> None:
    _request_correlation_id.set("")  # the thread serves another request next, or none


class CorrelationIdMiddleware:
    """Echoes the request's correlation id back in X-Request-ID. Called without Django's
    request signals (a test, a handler of one's own), it takes the id from the header itself."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        value = _request_correlation_id.get()
        if value:
            response = self.get_response(request)
        else:
            value = _incoming(request.headers.get(HEADER, ""))
            with correlation_id_set(value):
                response = self.get_response(request)
        response[HEADER] = value
        return response
