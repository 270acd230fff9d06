"""Jobs for the tests: each appends what it did to a file, so a test can see every attempt.

Workers started by the tests import this module with ``--include tests.jobs``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from typing import Any

from celery import Task, chain, shared_task, signals
from celery.exceptions import SoftTimeLimitExceeded
from django.db import transaction

from app.enqueue import job_enqueue
from app.errors import PermanentError, TransientError
from app.idempotency import effect_claim
from app.progress import progress

logger = logging.getLogger(__name__)


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


# A batch's callback (app/batches.py) on the images queue, for tests/images/.
@shared_task(bind=True, tracked=True, name="tasks.images.batch_probe_for_tests")
def images_batch_probe(
    self: Task, path: str, batch_id: str, succeeded: list[str], failed: list[str]
) -> None:
    note(path, "batch ended", self, batch_id=batch_id, succeeded=succeeded, failed=failed)


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


# Retried twice, then dead: jitter off, so 1 s then 2 s.
@shared_task(bind=True, retry_jitter=False, max_retries=2)
def transient_until_dead(self: Task, path: str) -> None:
    note(path, "start", self)
    raise TransientError("the remote end is down for good")


@shared_task(bind=True, retry_jitter=False, max_retries=3)
def chatty(self: Task, path: str, failures: int) -> None:
    """Logs a line on each attempt, fails the first ``failures``, then enqueues children:
    through job_enqueue, through plain delay(), and a chain of two (the worker sends the second
    when the first has run)."""
    logger.info("chatty attempt %s", self.request.retries + 1)
    note(path, "start", self)
    if self.request.retries < failures:
        raise TransientError(f"attempt {self.request.retries + 1} fails")
    with transaction.atomic():
        job_enqueue(chatty_child, args=[path, "job_enqueue"])
    chatty_child.delay(path, "delay")
    chain(chatty_child.si(path, "chain"), chatty_child.si(path, "chain, second")).delay()
    note(path, "done", self)


@shared_task(bind=True)
def chatty_child(self: Task, path: str, via: str) -> None:
    logger.info("child enqueued by %s", via)
    print(f"a print() from the child enqueued by {via}")
    note(path, "child", self, via=via)


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


# Tracked, no jitter: retried after 1 s, then 2 s...
@shared_task(bind=True, tracked=True, retry_jitter=False, max_retries=3)
def tracked_flaky(self: Task, path: str, failures: int) -> None:
    note(path, "start", self)
    if self.request.retries < failures:
        raise TransientError(f"attempt {self.request.retries + 1} fails")
    note(path, "done", self)


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


@shared_task(bind=True)
def fails_with_personal_data(self: Task, path: str, email: str) -> None:
    """Fails for good, holding a personal detail in its arguments and locals (an address)."""
    recipient = email.upper()
    note(path, "start", self)
    raise PermanentError(f"no mailbox for recipient #{len(recipient)}")


@shared_task(bind=True, tracked=True)
def dies_after_its_end(self: Task, path: str) -> None:
    """Runs; the first time, its process is then SIGKILLed after its end was committed (its
    record, a batch member's count and callback) and before the message was acknowledged."""
    note(path, "start", self)


@signals.task_postrun.connect
def _die_after_the_end(sender: Task | None = None, kwargs: Any = None, **extra: Any) -> None:
    """task_postrun is sent after the base task's on_success (the final write, in which a batch
    member ends) and before the worker acknowledges the message."""
    if sender is None or sender.name != "tests.jobs.dies_after_its_end":
        return
    marker = f"{kwargs['path']}.killed"
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
