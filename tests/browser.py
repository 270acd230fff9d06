"""Debian's Chromium, headless, driven by Selenium through Debian's chromedriver: no browser is
downloaded. Shared by the browser tests (the ``browser`` and ``live_site`` fixtures in conftest).

Where Chromium is missing, a browser test skips, saying how to install it, so ``make test`` works
on a laptop without it. CI sets ``REQUIRE_CHROMIUM=1`` (``.ci/run``), which turns that skip into a
failure: a broken install must not pass as a green run with the browser tests quietly left out.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.support import ROOT, wait_for

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
    # Shared memory in /tmp: a container's /dev/shm (64 MB under Docker) crashes page renders.
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)
# Screenshots land here, one folder per test, kept after the run for CI to collect (git-ignored).
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR") or ROOT / "test-artifacts")


def chromium_check(
    *, chromium: Path = CHROMIUM, chromedriver: Path = CHROMEDRIVER, required: bool | None = None
) -> None:
    """Skip the calling test where Chromium or its driver is missing; fail instead when
    ``required`` (by default: ``REQUIRE_CHROMIUM=1`` in the environment, as CI sets it)."""
    missing = [str(path) for path in (chromium, chromedriver) if not path.exists()]
    if not missing:
        return
    if required is None:
        required = os.environ.get("REQUIRE_CHROMIUM", "") not in {"", "0"}
    message = f"no {' or '.join(missing)}: apt-get install chromium chromium-driver"
    if required:
        pytest.fail(f"{message} (REQUIRE_CHROMIUM is set: the browser tests must run)")
    pytest.skip(f"{message} (REQUIRE_CHROMIUM=1 makes this a failure)")


@contextmanager
def chromium(profile: Path) -> Iterator[WebDriver]:
    """A headless Chromium with a profile of its own in ``profile``, quit and removed after."""
    chromium_check()
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def artifacts_dir(nodeid: str) -> Path:
    """The folder for one test's screenshots, emptied of an earlier run's."""
    folder = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "-", nodeid).strip("-")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


class Screenshots:
    """Saves numbered screenshots of one test into its artefacts folder and prints each path."""

    def __init__(self, browser: WebDriver, folder: Path) -> None:
        self.browser = browser
        self.folder = folder
        self.taken: list[Path] = []

    def __call__(self, name: str) -> Path:
        path = self.folder / f"{len(self.taken) + 1:02d}-{name}.png"
        assert self.browser.save_screenshot(str(path)), f"no screenshot saved at {path}"
        self.taken.append(path)
        print(f"screenshot: {path}")
        return path


def admin_login(browser: WebDriver, *, url: str, username: str, password: str) -> None:
    """Open ``url`` (a page behind the login), log in on the admin's login form it sends an
    anonymous visitor to (LOGIN_URL), and wait for the browser to leave that form."""
    browser.get(url)
    assert "/admin/login/" in browser.current_url, browser.current_url
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "[type=submit]").click()
    wait_for(
        lambda: browser.current_url == url or browser.find_elements(By.CSS_SELECTOR, ".errornote"),
        what="the login to be accepted or refused",
    )


def document_status(browser: WebDriver) -> int:
    """The HTTP status of the page the browser shows (Navigation Timing's responseStatus)."""
    script = "return performance.getEntriesByType('navigation')[0].responseStatus"
    return int(browser.execute_script(script))
