"""The jobs page in Debian's Chromium: log in, watch a job run to success without reloading
(the page's script polls the API), and cancel a running job with the page's button."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from pytest_django.fixtures import Settings
from pytest_django.live_server_helper import LiveServer
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from app.enqueue import job_enqueue
from tests import jobs
from tests.support import Broker, running_worker, wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,720",
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not CHROMIUM.exists() or not CHROMEDRIVER.exists(),
        reason="needs Debian's Chromium: apt-get install chromium chromium-driver",
    ),
]


@pytest.fixture
def server(settings: Settings, transactional_db: None) -> Iterator[LiveServer]:
    """pytest-django's live server, started after the settings below.

    Its ``live_server`` fixture lives for the whole session, so its middleware would keep the
    settings of whenever it started: with DEBUG off, SecurityMiddleware redirects to HTTPS.
    """
    settings.SECURE_SSL_REDIRECT = False
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    settings.DEBUG = True  # static files without collectstatic
    server = LiveServer("localhost")
    server._live_server_modified_settings.enable()
    yield server
    server.stop()
    server._live_server_modified_settings.disable()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tmp_path / "chromium-profile"
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


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
    server: LiveServer, browser: WebDriver, broker: Broker, tmp_path: Path
) -> None:
    password = uuid.uuid4().hex
    User.objects.create_user("sam", password=password, is_staff=True)
    browser.get(server.url + "/jobs/")
    assert "/admin/login/" in browser.current_url  # anonymous: sent to log in first
    browser.find_element(By.NAME, "username").send_keys("sam")
    browser.find_element(By.NAME, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "[type=submit]").click()
    wait_for(lambda: browser.current_url == server.url + "/jobs/", what="back on the jobs page")

    with running_worker(log_dir=tmp_path, env={"DJANGO_SETTINGS_MODULE": "config.settings"}):
        job_id = enqueue_for("sam", upto=4500, pause=0.001)  # about 5 s
        browser.get(server.url + "/jobs/")
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
        browser.save_screenshot(str(tmp_path / "jobs-succeeded.png"))

        long_id = enqueue_for("sam", upto=50_000, pause=0.001)
        browser.refresh()
        wait_for(lambda: row(browser, long_id)["progress"] > 0, timeout=30, what="it to run")
        browser.save_screenshot(str(tmp_path / "jobs-running.png"))
        row(browser, long_id)["element"].find_element(By.CSS_SELECTOR, "form.cancel button").click()
        wait_for(
            lambda: row(browser, long_id)["status"] == "cancelled",
            timeout=15,
            what="the row to show the job cancelled",
        )
        browser.save_screenshot(str(tmp_path / "jobs-cancelled.png"))
    print(f"screenshots in {tmp_path}")
