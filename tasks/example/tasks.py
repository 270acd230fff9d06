"""Example jobs: thin entry points that call ``services.py``. Celery names them
``tasks.example.<name>`` (config/celery.py drops the ``.tasks`` module), so they run on
``default``: ``tasks.example.*`` has no route of its own in config/queues.py."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import shared_task

from app.errors import PermanentError
from app.progress import progress
from tasks.example.services import greeting_build, ledger_credit

logger = logging.getLogger(__name__)

#: This family's periodic jobs, copied into django-celery-beat by ``manage.py sync_schedule``.
SCHEDULE: dict[str, dict[str, Any]] = {
    "example: say hello every hour": {
        "task": "tasks.example.say_hello",
        "crontab": {"minute": "0"},
        "kwargs": {"name": "beat"},
    },
}


@shared_task
def say_hello(name: str) -> str:
    """Fire and forget: no record, just logs."""
    greeting = greeting_build(name=name)
    logger.info("said %s", greeting)
    return greeting


@shared_task(tracked=True)
def credit(account: str, amount: int, key: str) -> dict[str, object]:
    """A tracked job with an effect that must happen once (enqueue it with job_enqueue)."""
    applied = ledger_credit(account=account, amount=amount, key=key)
    return {"account": account, "amount": amount, "applied": applied}


@shared_task(tracked=True)
def count_to(upto: int, seconds: float = 0.0) -> dict[str, int]:
    """A tracked job that reports progress: the demo endpoint enqueues it (see README). It keeps
    pace with ``seconds`` (sleeping only when ahead), so a long count is not made longer."""
    if upto < 1:
        raise PermanentError(f"upto must be at least 1, got {upto}")
    started = time.monotonic()
    for step in range(1, upto + 1):
        ahead = started + seconds * step / upto - time.monotonic()
        if ahead > 0.001:
            time.sleep(ahead)
        progress(100 * step / upto, f"{step} of {upto}")
    return {"counted": upto}
