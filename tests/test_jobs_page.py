"""The jobs page in Debian's Chromium: log in, watch a job run to success without reloading
(the page's script polls the API), cancel a running job with the page's button, and count the
jobs by status as the page shows them: in its list, in its history and in its chart."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from pytest_django.live_server_helper import LiveServer
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from app.enqueue import job_enqueue
from app.models import JobRecord
from tests import jobs
from tests.browser import Screenshots, admin_login
from tests.support import Broker, running_worker, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def enqueue_for(username: str, *, upto: int, pause: float) -> str:
    """A job of ``username``'s, counting with progress, as a family's endpoint would enqueue it."""
    with transaction.atomic():
        return job_enqueue(
            jobs.count_slowly,
            kwargs={"upto": upto, "pause": pause},
            owner=User.objects.get(username=username),
        )


def row(browser: WebDriver, job_id: str) -> dict[str, Any]:
    element = browser.find_element(By.ID, f"job-{job_id}")
    bar = element.find_element(By.TAG_NAME, "progress")
    return {
        "status": element.find_element(By.CSS_SELECTOR, '[data-field="status"]').text,
        "progress": int(float(bar.get_attribute("value") or 0)),
        "element": element,
    }


def test_the_jobs_page_follows_a_job_live_and_cancels_one(
    live_site: LiveServer,
    browser: WebDriver,
    screenshots: Screenshots,
    broker: Broker,
    tmp_path: Path,
) -> None:
    password = uuid.uuid4().hex
    User.objects.create_user("sam", password=password, is_staff=True)
    admin_login(browser, url=live_site.url + "/jobs/", username="sam", password=password)
    assert browser.current_url == live_site.url + "/jobs/"

    with running_worker(log_dir=tmp_path, env={"DJANGO_SETTINGS_MODULE": "config.settings"}):
        job_id = enqueue_for("sam", upto=4500, pause=0.001)  # about 5 s
        browser.get(live_site.url + "/jobs/")
        assert row(browser, job_id)["status"] in {"queued", "started"}
        browser.execute_script("window.notReloaded = true;")
        seen: list[int] = []

        def succeeded() -> bool:
            now = row(browser, job_id)
            seen.append(now["progress"])
            return now["status"] == "succeeded" and now["progress"] == 100

        wait_for(succeeded, timeout=30, what="the row to show the job succeeded")
        assert browser.execute_script("return window.notReloaded") is True
        assert any(0 < p < 100 for p in seen), seen  # progress shown on the way
        assert not row(browser, job_id)["element"].find_element(By.TAG_NAME, "form").is_displayed()
        wait_for(
            lambda: "Every job listed has ended" in browser.find_element(By.ID, "poll-state").text,
            what="polling to stop",
        )
        screenshots("jobs-succeeded")

        long_id = enqueue_for("sam", upto=50_000, pause=0.001)
        browser.refresh()
        wait_for(lambda: row(browser, long_id)["progress"] > 0, timeout=30, what="it to run")
        screenshots("jobs-running")
        row(browser, long_id)["element"].find_element(By.CSS_SELECTOR, "form.cancel button").click()
        wait_for(
            lambda: row(browser, long_id)["status"] == "cancelled",
            timeout=15,
            what="the row to show the job cancelled",
        )
        screenshots("jobs-cancelled")


def jobs_page_counts(browser: WebDriver) -> Counter[str]:
    """How many jobs of each status the jobs page lists (its rows: the recent jobs)."""
    cells = browser.find_elements(By.CSS_SELECTOR, '#jobs tr[data-job-id] [data-field="status"]')
    return Counter(cell.text for cell in cells)


def history_counts(browser: WebDriver, span: str) -> Counter[str]:
    """The page's history table by status, for ``span`` ("hour" or "day"); zeros left out."""
    counts: Counter[str] = Counter()
    for row in browser.find_elements(By.CSS_SELECTOR, "#counts-by-status tbody tr"):
        cell = row.find_element(By.CSS_SELECTOR, f'[data-span="{span}"]')
        counts[row.get_attribute("data-status") or ""] = int(cell.text)
    return +counts


def chart_bars(browser: WebDriver) -> list[tuple[str, float]]:
    """The chart's drawn parts as shown: (kind, height on screen in pixels)."""
    rects = browser.find_elements(By.CSS_SELECTOR, "#history-chart rect")
    return [
        ((r.get_attribute("class") or "").removeprefix("bar-"), r.rect["height"]) for r in rects
    ]


def test_the_jobs_page_counts_jobs_by_status(
    live_site: LiveServer, browser: WebDriver, screenshots: Screenshots
) -> None:
    ended = {"succeeded": 3, "failed": 2, "dead": 1, "cancelled": 1}
    now = timezone.now()
    for status, count in ended.items():
        for n in range(count):
            JobRecord.objects.create(
                task_name="tasks.example.count_to",
                queue="default",
                status=status,
                attempts=1,
                error="" if status == "succeeded" else f"{status} #{n}",
                started_at=now,
                finished_at=now,
            )
    password = uuid.uuid4().hex
    User.objects.create_user("sam", password=password, is_staff=True)  # staff: every job
    admin_login(browser, url=live_site.url + "/jobs/", username="sam", password=password)
    assert jobs_page_counts(browser) == Counter(ended)
    # The history (app/history.py) counts the same records, in the last hour and the last day,
    # and draws them in the chart's last bar: failed or dead, succeeded, the cancelled one.
    assert history_counts(browser, "hour") == history_counts(browser, "day") == Counter(ended)
    chart = browser.find_element(By.ID, "history-chart")
    assert chart.is_displayed() and chart.size["width"] > 600
    bars = chart_bars(browser)
    assert [kind for kind, _ in bars] == ["failed", "succeeded", "other"]
    heights = dict(bars)
    assert heights["failed"] == pytest.approx(heights["succeeded"], rel=0.05)  # 3 and 3
    assert heights["other"] == pytest.approx(heights["succeeded"] / 3, rel=0.05)  # 1 and 3
    screenshots("jobs-counts")

    browser.get(live_site.url + "/jobs/?status=failed")
    assert jobs_page_counts(browser) == Counter({"failed": 2})
    screenshots("jobs-counts-failed")
