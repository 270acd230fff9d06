"""Test isolation: a RabbitMQ vhost of our own for the whole session, emptied before each test.

pytest-django gives the tests their own database (``test_<name>``), so a developer's running
stack is never touched. Set TEST_BROKER_URL to use an existing vhost instead of creating one.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import hypothesis
import pytest
from pytest_django.fixtures import Settings
from pytest_django.live_server_helper import LiveServer
from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser import Screenshots, artifacts_dir, chromium
from tests.sentry import SentryStandIn, sentry_stand_in
from tests.support import ROOT, Broker, MakeRun, rabbitmqctl

# Hypothesis' per-example deadline (200 ms) measures the machine's load as much as the code: a
# property test of pure functions failed it at 366 ms on a loaded 2-core CI machine. Tests that
# care about time bound it themselves.
hypothesis.settings.register_profile("project", deadline=None)
hypothesis.settings.load_profile("project")


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("TEST_BROKER_URL"):
        url = os.environ["TEST_BROKER_URL"]
    else:
        vhost = f"test-{uuid.uuid4().hex[:12]}"
        rabbitmqctl("add_vhost", vhost)
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        config._test_vhost = vhost  # type: ignore[attr-defined]
        url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    # Celery reads this variable before its settings: it points this process and every
    # process the tests start at the test vhost.
    os.environ["CELERY_BROKER_URL"] = url


def pytest_unconfigure(config: pytest.Config) -> None:
    vhost = getattr(config, "_test_vhost", None)
    if vhost:
        rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
def broker() -> Iterator[Broker]:
    """The test vhost with every queue declared and empty."""
    from config.celery import app as celery_app

    broker = Broker(celery_app.conf.broker_url)
    broker.reset()
    yield broker
    broker.reset()


@pytest.fixture
def development_http(settings: Settings) -> None:
    """As `make run` serves: plain HTTP (the test client speaks no TLS), DEBUG on (the example's
    demo endpoint, static files without collectstatic)."""
    settings.SECURE_SSL_REDIRECT = False
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    settings.DEBUG = True


@pytest.fixture
def events(tmp_path: Path) -> Path:
    """A file test jobs append their events to (read it with tests.support.read_events)."""
    return tmp_path / "events.jsonl"


@pytest.fixture
def fresh_copy(tmp_path: Path) -> Path:
    """The repository as a fresh clone would have it: tracked and new files, nothing ignored."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    copy = tmp_path / "clone"
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            target = copy / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
            target.chmod(source.stat().st_mode)
    return copy


@pytest.fixture
def make_run(fresh_copy: Path) -> Iterator[MakeRun]:
    stack = MakeRun(fresh_copy)
    try:
        yield stack
    finally:
        stack.stop()
        for log in stack.logs:
            print(f"--- {log.name} ---\n{log.read_text(errors='replace')[-10000:]}")


@pytest.fixture
def media(settings: Settings, tmp_path: Path) -> Path:
    """An empty default storage of this test's own (MEDIA_ROOT): uploads, attachments."""
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = str(root)
    return root


@pytest.fixture
def sentry() -> Iterator[SentryStandIn]:
    """A local Sentry stand-in (tests/sentry.py); point processes at it with ``sentry.dsn``."""
    with sentry_stand_in() as server:
        yield server


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Debian's headless Chromium (tests/browser.py): skips where it is missing, unless
    REQUIRE_CHROMIUM=1 (CI) makes that a failure."""
    with chromium(tmp_path / "chromium-profile") as driver:
        yield driver


@pytest.fixture
def screenshots(browser: WebDriver, request: pytest.FixtureRequest) -> Screenshots:
    """``screenshots("name")`` saves the page into test-artifacts/<test>/ and prints the path."""
    return Screenshots(browser, artifacts_dir(request.node.nodeid))


@pytest.fixture
def live_site(settings: Settings, transactional_db: None) -> Iterator[LiveServer]:
    """The web app in a thread of this process (pytest-django's live server), on the test
    database, served over plain HTTP as `make run` does.

    Started here, after the settings below, rather than with pytest-django's ``live_server``:
    that one lives for the whole session, so its middleware would keep the settings of whenever
    it started, and with DEBUG off SecurityMiddleware redirects to HTTPS.
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
