"""The JSON API: a job's status, the job list the jobs page polls, cancel, and the demo job.

Every answer is JSON, errors included: ``{"error": "<what is wrong>"}`` with 400 (bad input),
403 (not allowed), 404 (malformed, unknown or not visible id), 405 (method) or 409 (the job
already ended).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.csrf import csrf_exempt

from app.enqueue import job_enqueue
from app.input import BAD_BODY, InputError, json_object_parse
from app.models import JobRecord
from app.records import record_request_cancel
from app.views.jobs import (
    JobFilter,
    JobNotFound,
    job_cancel_allowed,
    job_json,
    job_visible_get,
    jobs_visible,
    user_is_staff,
)
from tasks.example import count_to

DEMO_UPTO = (1, 10_000_000, 2_000_000)  # min, max, default
DEMO_PAUSE = (0.0, 0.01, 0.0)
#: The demo runs on the threads pool, which enforces no time limit: keep any demo short.
DEMO_MAX_SECONDS = 60


class ApiError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


View = Callable[..., HttpResponse]


def api_view(*methods: str) -> Callable[[View], View]:
    """Allow only ``methods``, and answer an ApiError as a JSON error."""

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                if request.method not in methods:
                    raise ApiError(405, f"use {' or '.join(methods)}", allowed=list(methods))
                try:
                    return view(request, *args, **kwargs)
                except BAD_BODY as exc:  # an oversized or malformed body: JSON, not Django's page
                    raise ApiError(400, f"the request body cannot be read: {exc}") from None
            except ApiError as exc:
                response = JsonResponse({"error": exc.message, **exc.extra}, status=exc.status)
                if exc.status == 405:
                    response["Allow"] = ", ".join(methods)
                return response

        return wrapper

    return decorate


def _visible(request: HttpRequest, job_id: str) -> JobRecord:
    try:
        return job_visible_get(user=request.user, job_id=job_id)
    except JobNotFound as exc:
        raise ApiError(404, str(exc)) from None


@api_view("GET")
def job_detail(request: HttpRequest, job_id: str) -> HttpResponse:
    """``GET /api/jobs/<id>/``: the job's status, progress and result."""
    record = _visible(request, job_id)
    return JsonResponse(job_json(record, traceback=user_is_staff(request.user)))


@api_view("GET")
def job_list(request: HttpRequest) -> HttpResponse:
    """``GET /api/jobs/?status=&task=&limit=``: recent jobs, as the jobs page lists them."""
    if not request.user.is_authenticated:
        raise ApiError(403, "log in to list jobs", login_url=reverse("admin:login"))
    try:
        filters = JobFilter.from_query(request.GET)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    records = filters.apply(jobs_visible(user=request.user, listing=True))
    return JsonResponse({"jobs": [job_json(r) for r in records], "filter": filters.query()})


@api_view("POST")
def _cancel(request: HttpRequest, job_id: str) -> HttpResponse:
    record = _visible(request, job_id)
    if not job_cancel_allowed(user=request.user, record=record):
        raise ApiError(403, "only the job's owner or staff can cancel it")
    new_status = record_request_cancel(job_id=str(record.id))
    record.refresh_from_db()
    if new_status is None:
        raise ApiError(
            409,
            f"job {record.id} already ended ({record.status}): nothing to cancel",
            job=job_json(record),
        )
    return JsonResponse(job_json(record))


def job_cancel(request: HttpRequest, job_id: str) -> HttpResponse:
    """``POST /api/jobs/<id>/cancel/``: a queued job is cancelled at once; a running one stops
    at its next progress report (the answer then says ``cancel_requested``).

    A plain HTML form (the jobs page without JavaScript) sends ``next``: it is sent back there,
    with the outcome as a message.
    """
    response = _cancel(request, job_id)
    next_url = request.POST.get("next", "") if request.method == "POST" else ""
    if not next_url or not url_has_allowed_host_and_scheme(
        next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return response
    body = json.loads(response.content)
    if response.status_code >= 400:
        messages.error(request, body["error"])
    elif body["status"] == "cancelled":
        messages.success(request, f"Job {body['id']} cancelled.")
    else:
        messages.success(request, f"Job {body['id']} will stop at its next progress report.")
    return HttpResponseRedirect(next_url)


def _shown(raw: Any) -> str:
    """A field's value for an error message: short, and no deep repr of a nested value."""
    if isinstance(raw, (dict, list)):
        return f"a JSON {'object' if isinstance(raw, dict) else 'array'}"
    text = repr(raw)
    return text if len(text) <= 60 else text[:59] + "…"


def _number(fields: Any, name: str, bounds: tuple[Any, Any, Any], kind: type) -> Any:
    low, high, default = bounds
    raw = fields.get(name)
    if raw is None or raw == "":
        return default
    try:
        if isinstance(raw, bool):
            raise ValueError
        value = kind(raw)
        if kind is int and isinstance(raw, float) and raw != value:
            raise ValueError
        within = low <= value <= high  # False for nan; exact for an int past a float's range
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(1e309), float(10**400)
        within = False
    if not within:
        what = "a whole number" if kind is int else "a number"
        raise ApiError(400, f"{name} must be {what} from {low} to {high}, got {_shown(raw)}")
    return value


@csrf_exempt  # so that `curl -X POST` works; it only exists with DEBUG on
@api_view("POST")
def demo_enqueue(request: HttpRequest) -> HttpResponse:
    """``POST /api/demo/`` (DEBUG only): enqueue ``tasks.example.count_to`` as a tracked job.

    Optional fields, form or JSON: ``upto`` (1 to 10 000 000, default 2 000 000) and ``pause``
    (seconds per step, 0 to 0.01, default 0). Answers 202 with the job id and its status URL.
    """
    if not settings.DEBUG:
        raise ApiError(404, "the demo endpoint only exists with DJANGO_DEBUG=1")
    fields: Any = request.POST
    if request.content_type == "application/json" and request.body:
        try:
            fields = json_object_parse(request.body)
        except InputError as exc:
            raise ApiError(400, str(exc)) from None
    upto = _number(fields, "upto", DEMO_UPTO, int)
    pause = _number(fields, "pause", DEMO_PAUSE, float)
    if upto * pause > DEMO_MAX_SECONDS:
        raise ApiError(400, f"upto times pause must stay under {DEMO_MAX_SECONDS} seconds")
    owner = request.user if request.user.is_authenticated else None
    with transaction.atomic():
        job_id = job_enqueue(count_to, kwargs={"upto": upto, "pause": pause}, owner=owner)
    status_url = reverse("api-job", args=[job_id])
    return JsonResponse({"id": job_id, "status_url": status_url}, status=202)
