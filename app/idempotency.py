"""Making an effect happen once, even when its job runs twice (a redelivery after a crash).

Claim a key in the same database transaction as the effect: if the transaction commits, the
claim and the effect are both there; if it rolls back, neither is, and the next run tries again.

    with transaction.atomic():
        if not effect_claim(key=f"invoice-paid:{invoice_id}"):
            return  # done by an earlier run
        Invoice.objects.filter(id=invoice_id).update(paid=True)

For an effect outside the database (an email, a payment API), claim it right before the call and
pass the key to the provider's own idempotency key where it has one.
"""

from __future__ import annotations

from datetime import datetime

from celery import current_task
from django.db import IntegrityError, transaction

from app.models import EffectClaim


def effect_claim(*, key: str) -> bool:
    """True if this run claimed ``key`` (go ahead), False if an earlier run did (skip)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("effect_claim must run inside the effect's transaction.atomic()")
    task_id = (current_task.request.id or "") if current_task else ""
    try:
        with transaction.atomic():
            EffectClaim.objects.create(key=key, task_id=task_id)
    except IntegrityError:
        return False
    return True


def claims_prune(*, before: datetime) -> int:
    """Delete claims older than ``before``: older than any message that could still come back."""
    deleted, _ = EffectClaim.objects.filter(claimed_at__lt=before).delete()
    return deleted


def effect_release(*, key: str) -> None:
    """Give up a claim whose effect certainly did not happen (the call raised before the provider
    took it), so that a retry may claim it again. Only for that case: a claim whose outcome is
    unknown (the worker died) must stay, or the effect could happen twice."""
    EffectClaim.objects.filter(key=key).delete()
