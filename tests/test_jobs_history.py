"""The jobs page's history (app/history.py): counts by status and by task over the last hour and
day, and the chart of the day, drawn as inline SVG, from known job records."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from app.models import JobRecord, JobStatus

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("development_http")]


def records(
    task: str, status: str, n: int, *, ago: timedelta, now: datetime, owner: User | None = None
) -> None:
    made = JobRecord.objects.bulk_create(
        JobRecord(task_name=task, queue="default", status=status, owner=owner) for _ in range(n)
    )
    JobRecord.objects.filter(id__in=[r.id for r in made]).update(enqueued_at=now - ago)


def page(user: User) -> str:
    client = Client()
    client.force_login(user)
    response = client.get("/jobs/")
    assert response.status_code == 200
    return response.content.decode()


def cell(html: str, row: str, span: str) -> int:
    """The number in column ``span`` of the table row marked ``row`` (data-status=..., ...)."""
    found = re.search(rf'<tr {row}>.*?data-span="{span}">(\d+)<', html, re.S)
    assert found, f"no {span} cell in the row {row}"
    return int(found.group(1))


def test_staff_see_counts_by_status_and_task_and_the_days_chart() -> None:
    now = timezone.now()
    minutes = timedelta(minutes=1)
    records("tasks.a.run", JobStatus.SUCCEEDED, 3, ago=10 * minutes, now=now)
    records("tasks.a.run", JobStatus.FAILED, 1, ago=10 * minutes, now=now)
    records("tasks.b.sync", JobStatus.QUEUED, 2, ago=10 * minutes, now=now)
    records("tasks.a.run", JobStatus.SUCCEEDED, 5, ago=5 * 60 * minutes, now=now)
    records("tasks.a.run", JobStatus.DEAD, 1, ago=5 * 60 * minutes, now=now)
    records("tasks.b.sync", JobStatus.SUCCEEDED, 4, ago=10 * 60 * minutes, now=now)
    records("tasks.c.old", JobStatus.SUCCEEDED, 7, ago=2 * 24 * 60 * minutes, now=now)
    html = page(User.objects.create_user("sam", is_staff=True))

    expected = {  # status: (last hour, last day)
        "succeeded": (3, 12),
        "failed": (1, 1),
        "dead": (0, 1),
        "queued": (2, 2),
        "started": (0, 0),
        "cancelled": (0, 0),
    }
    for status, (hour, day) in expected.items():
        row = f'data-status="{status}"'
        assert (cell(html, row, "hour"), cell(html, row, "day")) == (hour, day), status
    assert re.search(r'<tfoot><tr><td>all</td><td class="n" data-span="hour">6</td>'
                     r'<td class="n" data-span="day">16</td>', html)  # fmt: skip
    a, b = 'data-task="tasks.a.run"', 'data-task="tasks.b.sync"'
    assert [cell(html, a, s) for s in ("hour", "hour-failed", "day", "day-succeeded")] == [
        4,
        1,
        10,
        8,
    ]
    assert cell(html, a, "day-failed") == 2  # failed and dead
    assert [cell(html, b, s) for s in ("hour", "day", "day-succeeded", "day-failed")] == [
        2,
        6,
        4,
        0,
    ]
    history = html[html.index('<section id="history"') : html.index("</section>")]
    assert "tasks.c.old" not in history  # enqueued before the day (the job list has it)
    assert html.index(a) < html.index(b)  # the busiest task first

    svg = re.search(r'<svg id="history-chart".*?</svg>', html, re.S)
    assert svg, "no chart"
    bars = re.findall(r'<g class="bar"><title>(.*?)</title>(.*?)</g>', svg.group(0), re.S)
    assert len(bars) == 24 * 4  # one per 15 minutes
    last_label, last_rects = bars[-1]
    assert last_label.endswith(": 6 enqueued, 3 succeeded, 1 failed or dead, 2 open or cancelled")
    heights = dict(re.findall(r'class="bar-(\w+)".*?height="([\d.]+)"', last_rects))
    # The tallest bar (6 jobs, here and five hours ago) fills the 122 units above the axis.
    assert {kind: float(h) for kind, h in heights.items()} == pytest.approx(
        {"failed": 122 / 6, "succeeded": 3 * 122 / 6, "other": 2 * 122 / 6}, abs=0.01
    )
    assert sum(1 for _, rects in bars if "<rect" in rects) == 3
    assert "the tallest bar 6 jobs" in html


def test_a_user_sees_the_history_of_their_own_jobs_only() -> None:
    now = timezone.now()
    alice = User.objects.create_user("alice")
    records("tasks.a.run", JobStatus.SUCCEEDED, 2, ago=timedelta(minutes=3), now=now, owner=alice)
    records("tasks.a.run", JobStatus.FAILED, 5, ago=timedelta(minutes=3), now=now)
    html = page(alice)
    assert (your := "(your own jobs)") in html
    assert cell(html, 'data-status="succeeded"', "day") == 2
    assert cell(html, 'data-status="failed"', "day") == 0

    empty = page(User.objects.create_user("bob"))
    assert your in empty
    assert "No jobs in the last day." in empty
    assert "<rect" not in empty
    assert "the tallest bar 0 jobs" in empty
