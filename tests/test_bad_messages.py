"""Bad messages neither crash the worker nor vanish: each ends in <queue>.dead."""

from __future__ import annotations

import json
import pickle
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests import jobs
from tests.support import Broker, read_events, running_worker, wait_for

pytestmark = pytest.mark.slow


def task_headers(task: str = "tests.jobs.record", **extra: object) -> dict[str, object]:
    """Celery protocol 2 headers, as a real producer would send them."""
    return {"task": task, "id": str(uuid.uuid4()), "lang": "py", "retries": 0, **extra}


@pytest.mark.parametrize(
    ("case", "body", "content_type", "headers"),
    [
        ("pickle", pickle.dumps(([], {}, {})), "application/x-python-serialize", task_headers()),
        ("unknown task", json.dumps([[], {}, {}]).encode(), "application/json",
         task_headers("no.such.task")),
        ("body not JSON", b'{"args": [', "application/json", task_headers()),
        ("not a Celery message", b"{oops", "application/json", {}),
    ],
)  # fmt: skip
def test_bad_message_is_dead_lettered_and_the_worker_carries_on(
    broker: Broker,
    events: Path,
    tmp_path: Path,
    case: str,
    body: bytes,
    content_type: str,
    headers: dict[str, object],
) -> None:
    with running_worker(log_dir=tmp_path) as worker:
        broker.publish_raw(body, queue="default", content_type=content_type, headers=headers)
        dead = wait_for(lambda: broker.get("default.dead"), what=f"{case} in default.dead")
        assert worker.ping()
        jobs.record.delay(str(events))
        wait_for(lambda: len(read_events(events)) == 2, what="a good job after the bad one")
    # amqp hands utf-8 bodies back as str; either way they are the bytes that were sent.
    assert (dead.body.encode() if isinstance(dead.body, str) else dead.body) == body
    deaths: Any = dead.headers["x-death"]
    assert deaths[0]["reason"] == "rejected"
    left = broker.get("default")
    assert left is None, (left.headers, left.body)
