"""The jobs API (mounted at ``/api/jobs/``): a job's status, the list the jobs page polls, cancel.

Who sees which job is decided in ``app/views/jobs.py``; errors are JSON (``app/api.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from ninja import Router, Schema

from app.api import ApiError, ErrorOut
from app.models import JobRecord, JobStatus
from app.records import record_request_cancel
from app.views.jobs import (
    LIST_LIMIT_DEFAULT,
    JobFilter,
    JobNotFound,
    job_cancel_allowed,
    job_json,
    job_visible_get,
    jobs_visible,
    user_is_staff,
)

router = Router(tags=["jobs"])


class JobOut(Schema):
    """A job as the API shows it; ``traceback`` for staff only."""

    id: str
    task: str
    queue: str
    summary: str
    status: JobStatus
    final: bool
    progress: int
    progress_message: str
    attempts: int
    result: Any
    error: str
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    correlation_id: str
    replay_of: str | None
    cancel_requested: bool
    traceback: str | None = None


class JobListOut(Schema):
    jobs: list[JobOut]
    filter: dict[str, str]


class LoginErrorOut(ErrorOut):
    login_url: str


class ConflictOut(ErrorOut):
    job: JobOut


def _visible(request: HttpRequest, job_id: str) -> JobRecord:
    try:
        return job_visible_get(user=request.user, job_id=job_id)
    except JobNotFound as exc:
        raise ApiError(404, str(exc)) from None


@router.get(
    "/",
    response={200: JobListOut, 400: ErrorOut, 403: LoginErrorOut},
    url_name="job-list",
    exclude_unset=True,
)
def job_list(
    request: HttpRequest, status: str = "", task: str = "", limit: int = LIST_LIMIT_DEFAULT
) -> dict[str, Any]:
    """Recent jobs, newest first, as the jobs page lists them: staff see all, users their own."""
    if not request.user.is_authenticated:
        raise ApiError(403, "log in to list jobs", login_url=reverse("admin:login"))
    try:
        filters = JobFilter.create(status=status, task=task, limit=limit)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    records = filters.apply(jobs_visible(user=request.user, listing=True))
    return {"jobs": [job_json(r) for r in records], "filter": filters.query()}


# A str id, not a UUID: a malformed id gets the same clear 404 as an unknown one.
@router.get("/{job_id}/", response={200: JobOut, 404: ErrorOut}, url_name="job", exclude_unset=True)
def job_detail(request: HttpRequest, job_id: str) -> dict[str, Any]:
    """The job's status, progress and result (poll this while it runs)."""
    record = _visible(request, job_id)
    return job_json(record, traceback=user_is_staff(request.user))


@router.post(
    "/{job_id}/cancel/",
    response={200: JobOut, 302: None, 403: ErrorOut, 404: ErrorOut, 409: ConflictOut},
    url_name="job-cancel",
    exclude_unset=True,
)
def job_cancel(request: HttpRequest, job_id: str) -> Any:
    """A queued job is cancelled at once; a running one stops at its next progress report (the
    answer then says ``cancel_requested``). Needs a CSRF token with a session login
    (``app.api.session_csrf``).

    A plain HTML form (the jobs page without JavaScript) sends ``next``: it is sent back there,
    with the outcome as a message.
    """
    next_url = request.POST.get("next", "")
    if not next_url or not url_has_allowed_host_and_scheme(
        next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return _cancel(request, job_id)
    try:
        body = _cancel(request, job_id)
    except ApiError as exc:
        messages.error(request, exc.message)
    else:
        if body["status"] == JobStatus.CANCELLED:
            messages.success(request, f"Job {body['id']} cancelled.")
        else:
            messages.success(request, f"Job {body['id']} will stop at its next progress report.")
    return HttpResponseRedirect(next_url)


def _cancel(request: HttpRequest, job_id: str) -> dict[str, Any]:
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
    return job_json(record)
