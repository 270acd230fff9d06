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

import pytest
from pytest_django.fixtures import Settings

from tests.support import ROOT, Broker, MakeRun, rabbitmqctl


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
