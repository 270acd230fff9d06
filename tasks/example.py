"""Example jobs: the shapes every task here follows.

Tasks are thin entry points; the logic is in plain, typed, keyword-only functions that tests call
without a broker. ``tasks.example.*`` has no route of its own, so these run on ``default``.
"""

from __future__ import annotations

import logging
import time

from celery import shared_task
from django.db import transaction

from app.errors import PermanentError
from app.idempotency import effect_claim
from app.models import ExampleLedgerEntry
from app.progress import progress

logger = logging.getLogger(__name__)


def greeting_build(*, name: str) -> str:
    name = name.strip()
    if not name or len(name) > 100:
        raise PermanentError(f"name must be 1 to 100 characters, got {len(name)}")
    return f"Hello, {name}!"


@shared_task
def say_hello(name: str) -> str:
    """Fire and forget: no record, just logs."""
    greeting = greeting_build(name=name)
    logger.info("said %s", greeting)
    return greeting


def ledger_credit(*, account: str, amount: int, key: str) -> bool:
    """Credit an account once per ``key``, however often the job runs. True if it did now."""
    if amount <= 0:
        raise PermanentError(f"amount must be positive, got {amount}")
    with transaction.atomic():
        if not effect_claim(key=key):
            logger.info("credit %s already applied by an earlier run; skipped", key)
            return False
        ExampleLedgerEntry.objects.create(account=account, amount=amount)
    return True


@shared_task(tracked=True)
def credit(account: str, amount: int, key: str) -> dict[str, object]:
    """A tracked job with an effect that must happen once (enqueue it with job_enqueue)."""
    applied = ledger_credit(account=account, amount=amount, key=key)
    return {"account": account, "amount": amount, "applied": applied}


@shared_task(tracked=True)
def count_to(upto: int, pause: float = 0.0) -> dict[str, int]:
    """A tracked job that reports progress: the demo endpoint enqueues it (see README)."""
    if upto < 1:
        raise PermanentError(f"upto must be at least 1, got {upto}")
    for step in range(1, upto + 1):
        if pause:
            time.sleep(pause)
        progress(100 * step / upto, f"{step} of {upto}")
    return {"counted": upto}
