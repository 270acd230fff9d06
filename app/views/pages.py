"""The jobs page: recent jobs with status and live progress, filtered by status and task."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from app.models import FINAL_STATUSES, JobStatus
from app.views.jobs import CANCELLABLE_STATUSES, JobFilter, jobs_visible

POLL_INTERVAL_MS = 2000


@require_GET
@login_required  # anonymous visitors go to LOGIN_URL (the admin's login) and come back
def jobs_page(request: HttpRequest) -> HttpResponse:
    """``GET /jobs/``: staff see every job, other users their own. The page's script polls
    ``GET /api/jobs/`` with the same filter while a listed job has not ended."""
    error = ""
    try:
        filters = JobFilter.from_query(request.GET)
    except ValueError as exc:
        error = str(exc)
        filters = JobFilter()
    jobs = filters.apply(jobs_visible(user=request.user, listing=True))
    script_config = {
        "api": reverse("api:job-list") + "?" + urlencode(filters.query()),
        "final": [str(s) for s in FINAL_STATUSES],
        "cancellable": [str(s) for s in CANCELLABLE_STATUSES],
        "interval": POLL_INTERVAL_MS,
    }
    context = {
        "jobs": jobs,
        "filters": filters,
        "statuses": JobStatus.values,
        "cancellable": script_config["cancellable"],
        "error": error,
        "script_config": script_config,
    }
    return render(request, "app/jobs.html", context, status=400 if error else 200)
