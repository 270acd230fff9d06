"""The example family's logic: plain, typed, keyword-only functions, tested without a broker."""

from __future__ import annotations

import logging

from django.db import transaction

from app.errors import PermanentError
from app.idempotency import effect_claim
from tasks.example.models import LedgerEntry

logger = logging.getLogger(__name__)


def greeting_build(*, name: str) -> str:
    name = name.strip()
    if not name or len(name) > 100:
        raise PermanentError(f"name must be 1 to 100 characters, got {len(name)}")
    return f"Hello, {name}!"


def ledger_credit(*, account: str, amount: int, key: str) -> bool:
    """Credit an account once per ``key``, however often the job runs. True if it did now."""
    if amount <= 0:
        raise PermanentError(f"amount must be positive, got {amount}")
    with transaction.atomic():
        if not effect_claim(key=key):
            logger.info("credit %s already applied by an earlier run; skipped", key)
            return False
        LedgerEntry.objects.create(account=account, amount=amount)
    return True
