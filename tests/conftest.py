"""Test isolation: a RabbitMQ vhost of our own for the whole session, emptied before each test.

pytest-django gives the tests their own database (``test_<name>``), so a developer's running
stack is never touched. Set TEST_BROKER_URL to use an existing vhost instead of creating one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Broker, rabbitmqctl


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
def events(tmp_path: Path) -> Path:
    """A file test jobs append their events to (read it with tests.support.read_events)."""
    return tmp_path / "events.jsonl"
