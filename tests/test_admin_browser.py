"""The admin in Debian's Chromium: job records and periodic tasks are for staff only.

The periodic tasks' admin lets whoever may change one run any registered task with any arguments
(django-celery-beat), and job records hold arguments, results and tracebacks: a user who is not
staff is refused, even logged in and even holding the view permissions; staff with those
permissions see both lists.
"""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from pytest_django.live_server_helper import LiveServer
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from app.models import JobRecord, JobStatus
from tests.browser import Screenshots, admin_login, document_status

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

JOB_RECORDS = "/admin/app/jobrecord/"
PERIODIC_TASKS = "/admin/django_celery_beat/periodictask/"
REFUSED = "Please enter the correct username and password for a staff account"


def user_with_view_permissions(username: str, password: str, *, is_staff: bool) -> User:
    user = User.objects.create_user(username, password=password, is_staff=is_staff)
    user.user_permissions.set(
        Permission.objects.filter(codename__in=["view_jobrecord", "view_periodictask"])
    )
    return user


def list_rows(browser: WebDriver) -> list[str]:
    """The rows of an admin list page, as text."""
    return [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")]


def text(browser: WebDriver) -> str:
    return str(browser.find_element(By.TAG_NAME, "body").text)


def test_the_admin_shows_job_records_and_periodic_tasks_to_staff_only(
    live_site: LiveServer, browser: WebDriver, screenshots: Screenshots
) -> None:
    now = timezone.now()
    record = JobRecord.objects.create(
        task_name="tasks.example.count_to",
        queue="default",
        status=JobStatus.SUCCEEDED,
        progress=100,
        attempts=1,
        result={"counted": 3},
        started_at=now,
        finished_at=now,
    )
    hourly = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.HOURS)
    PeriodicTask.objects.create(
        name="browser test: say hello", task="tasks.example.say_hello", interval=hourly
    )
    password = uuid.uuid4().hex
    user_with_view_permissions("nina", password, is_staff=False)
    user_with_view_permissions("sam", password, is_staff=True)

    # Not staff: the admin's login refuses her...
    admin_login(browser, url=live_site.url + JOB_RECORDS, username="nina", password=password)
    assert "/admin/login/" in browser.current_url
    assert REFUSED in text(browser)
    screenshots("admin-refuses-non-staff-login")
    # ...and logged in elsewhere in the product, the admin's pages still send her away.
    client = Client()
    client.force_login(User.objects.get(username="nina"))
    browser.delete_all_cookies()
    browser.add_cookie({"name": "sessionid", "value": client.cookies["sessionid"].value})
    for page in (JOB_RECORDS, PERIODIC_TASKS):
        browser.get(live_site.url + page)
        assert "/admin/login/" in browser.current_url, page
        assert "You are authenticated as nina, but are not authorized" in text(browser)
        assert str(record.id) not in text(browser)
    screenshots("admin-refuses-non-staff-session")

    browser.delete_all_cookies()
    admin_login(browser, url=live_site.url + JOB_RECORDS, username="sam", password=password)
    assert browser.current_url == live_site.url + JOB_RECORDS
    assert document_status(browser) == 200
    rows = list_rows(browser)
    assert len(rows) == 1 and str(record.id) in rows[0], rows
    assert "tasks.example.count_to" in rows[0] and "Succeeded" in rows[0], rows
    screenshots("admin-job-records")

    browser.get(live_site.url + PERIODIC_TASKS)
    assert document_status(browser) == 200
    rows = list_rows(browser)
    assert len(rows) == 1 and "browser test: say hello" in rows[0], rows
    screenshots("admin-periodic-tasks")
