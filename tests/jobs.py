"""Jobs for the tests: each appends what it did to a file, so a test can see every attempt.

Workers started by the tests import this module with ``--include tests.jobs``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.db import transaction

from app.errors import PermanentError, TransientError
from app.idempotency import effect_claim
from app.progress import progress


def note(path: str, event: str, task: Task, **extra: Any) -> None:
    line = {
        "event": event,
        "task_id": task.request.id,
        "attempt": task.request.retries + 1,
        "pid": os.getpid(),
        "at": time.time(),
        **extra,
    }
    with open(path, "a") as out:
        out.write(json.dumps(line) + "\n")


@shared_task(bind=True)
def record(self: Task, path: str, sleep: float = 0.0) -> None:
    note(path, "start", self)
    time.sleep(sleep)
    note(path, "done", self)


# Named inside tasks.images.*, so config/queues.py routes it to the images queue.
@shared_task(bind=True, name="tasks.images.probe_for_tests")
def images_probe(self: Task, path: str) -> None:
    note(path, "done", self)


# No jitter, so the delays are exactly 1 s, 2 s, 4 s... and the test can check they grow.
@shared_task(bind=True, retry_jitter=False, max_retries=3)
def flaky(self: Task, path: str, failures: int) -> None:
    note(path, "start", self)
    if self.request.retries < failures:
        raise TransientError(f"attempt {self.request.retries + 1} fails")
    note(path, "done", self)


@shared_task(bind=True, retry_jitter=False, max_retries=1)
def always_transient(self: Task, path: str) -> None:
    note(path, "start", self)
    raise TransientError("the remote end is still down")


@shared_task(bind=True)
def permanent(self: Task, path: str) -> None:
    note(path, "start", self)
    raise PermanentError("this input can never work")


@shared_task(bind=True, max_retries=1, default_retry_delay=0)
def kill_own_process(self: Task, path: str) -> None:
    note(path, "start", self)
    os.kill(os.getpid(), signal.SIGKILL)


@shared_task(bind=True, soft_time_limit=1, time_limit=2)
def ignores_soft_time_limit(self: Task, path: str) -> None:
    note(path, "start", self)
    try:
        time.sleep(10)
    except SoftTimeLimitExceeded:
        note(path, "soft-limit", self)
        time.sleep(10)


@shared_task(bind=True, tracked=True)
def tracked_record(self: Task, path: str, sleep: float = 0.0) -> dict[str, int]:
    note(path, "start", self)
    time.sleep(sleep)
    note(path, "done", self)
    return {"slept": int(sleep)}


@shared_task(bind=True, tracked=True)
def effect_then_die(self: Task, path: str, key: str) -> bool:
    """Commits its effect (a line in ``path``, written with its claim), then (first attempt
    only) dies before the worker can ack."""
    with transaction.atomic():
        applied = effect_claim(key=key)
        if applied:
            note(path, "effect", self)
    if self.request.retries == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    return applied


@shared_task(tracked=True)
def count_slowly(upto: int, pause: float = 0.0) -> dict[str, int]:
    """Counts to ``upto`` with progress reports (each may stop it, once cancelled)."""
    if upto < 1:
        raise PermanentError(f"upto must be at least 1, got {upto}")
    for step in range(1, upto + 1):
        if pause:
            time.sleep(pause)
        progress(100 * step / upto, f"{step} of {upto}")
    return {"counted": upto}


@shared_task(bind=True, tracked=True)
def fails_until_file_exists(self: Task, path: str) -> str:
    if not os.path.exists(path):
        raise PermanentError(f"{path} does not exist yet")
    return "found it"


@shared_task(bind=True, tracked=True, max_retries=0)
def tracked_kill_own_process(self: Task) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@shared_task(queue="no-such-queue")
def misrouted() -> None:
    """Routed to a queue that config/queues.py does not declare."""


def _note_probe(task: Task) -> None:
    """Append the message's ``probe_id`` header to $PROBE_LOG (tests/test_malformed_messages)."""
    with open(os.environ["PROBE_LOG"], "a") as out:
        out.write(json.dumps(task.request.get("probe_id")) + "\n")


@shared_task(bind=True)
def accept_anything(self: Task, *args: Any, **kwargs: Any) -> None:
    _note_probe(self)


@shared_task(bind=True, tracked=True)
def accept_anything_tracked(self: Task, *args: Any, **kwargs: Any) -> None:
    _note_probe(self)


@shared_task
def noop() -> None:
    """Does nothing, quickly: for tests of what surrounds every task (events, acks)."""
