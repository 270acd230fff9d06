"""The correlation id: which request caused a job (and the jobs it enqueued in turn).

The web middleware sets it per request; the enqueue helper puts it in the message headers; a
worker reads it from the running task's headers. Logs and job records carry it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING

from celery import current_task

if TYPE_CHECKING:  # config/logging.py imports this module while settings load
    from django.http import HttpRequest, HttpResponse

HEADER = "X-Request-ID"
#: The message header that carries it. Not "correlation_id": Celery uses that name for the task id.
MESSAGE_HEADER = "job_correlation_id"
_VALID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_request_correlation_id: ContextVar[str] = ContextVar("correlation_id", default="")


def correlation_id() -> str:
    """The current request's id, or the running task's, or "" outside both."""
    value = _request_correlation_id.get()
    if not value and current_task:
        value = getattr(current_task.request, MESSAGE_HEADER, None) or ""
        if not isinstance(value, str) or not _VALID.fullmatch(value):
            value = ""  # a message's headers are input: one that does not fit is dropped
    return value


class CorrelationIdMiddleware:
    """Takes a well-formed X-Request-ID from the proxy, or makes one; echoes it back."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get(HEADER, "")
        value = incoming if _VALID.fullmatch(incoming) else uuid.uuid4().hex
        token = _request_correlation_id.set(value)
        try:
            response = self.get_response(request)
        finally:
            _request_correlation_id.reset(token)
        response[HEADER] = value
        return response
