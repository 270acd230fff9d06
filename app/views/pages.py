"""The jobs page: recent jobs with status and live progress, filtered by status and task; above
them, what the last hour and day held (app/history.py), with a chart drawn as inline SVG here
(no JavaScript to build or download)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from app.history import History, history_read
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
    visible = jobs_visible(user=request.user, listing=True)
    jobs = filters.apply(visible)
    history = history_read(records=visible, now=timezone.now())
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
        "history": history,
        "chart": history_chart(history),
        "history_rows": history_rows(history),
    }
    return render(request, "app/jobs.html", context, status=400 if error else 200)


def history_rows(history: History) -> dict[str, Any]:
    """The two tables of counts, as rows: per status, and per task (busiest of the day first),
    each with the last hour's figure next to the day's."""
    recent_tasks = {t.task_name: t for t in history.recent.by_task}
    statuses = [
        {"status": s, "hour": history.recent.by_status[s], "day": history.whole.by_status[s]}
        for s in JobStatus.values
    ]
    tasks = []
    for task in history.whole.by_task:
        recent = recent_tasks.get(task.task_name)
        tasks.append(
            {
                "task_name": task.task_name,
                "hour": recent.total if recent else 0,
                "hour_failed": recent.failed if recent else 0,
                "day": task.total,
                "day_failed": task.failed,
                "day_succeeded": task.by_status.get(JobStatus.SUCCEEDED, 0),
            }
        )
    totals = {"hour": history.recent.total, "day": history.whole.total}
    return {"statuses": statuses, "tasks": tasks, "totals": totals}


#: The chart's drawing area, in SVG user units (it scales to the page's width).
CHART_WIDTH, CHART_HEIGHT, CHART_AXIS = 960, 140, 18


def history_chart(history: History) -> dict[str, Any]:
    """Bars of the chart, one per bucket: succeeded stacked on failed stacked on the rest, with
    a tick every few hours. Plain numbers for the template to place; the tallest bar fills it."""
    buckets = history.buckets
    tallest = max((b.total for b in buckets), default=0) or 1
    slot = CHART_WIDTH / len(buckets)
    scale = (CHART_HEIGHT - CHART_AXIS) / tallest
    bars = []
    for i, bucket in enumerate(buckets):
        base = float(CHART_HEIGHT - CHART_AXIS)
        parts = []
        for kind, n in (
            ("failed", bucket.failed),
            ("succeeded", bucket.succeeded),
            ("other", bucket.other),
        ):
            height = n * scale
            base -= height
            if n:
                parts.append({"kind": kind, "y": _svg(base), "height": _svg(height)})
        label = (
            f"{bucket.start:%H:%M}: {bucket.total} enqueued, {bucket.succeeded} succeeded, "
            f"{bucket.failed} failed or dead, {bucket.other} open or cancelled"
        )
        bars.append({"x": _svg(i * slot), "width": _svg(slot - 1), "parts": parts, "label": label})
    ticks_every = len(buckets) // 8 or 1
    ticks = [
        {"x": _svg(i * slot), "label": f"{buckets[i].start:%H:%M}"}
        for i in range(0, len(buckets), ticks_every)
    ]
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "axis_y": CHART_HEIGHT - CHART_AXIS,
        "label_y": CHART_HEIGHT - 4,
        "tallest": tallest if any(b.total for b in buckets) else 0,
        "bars": bars,
        "ticks": ticks,
    }


def _svg(number: float) -> str:
    """A coordinate as SVG reads it: a dot for decimals whatever the locale (the template would
    localise a float)."""
    return f"{number:.2f}".rstrip("0").rstrip(".")
