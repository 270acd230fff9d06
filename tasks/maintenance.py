"""Housekeeping jobs, scheduled in config/schedule.py."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from app.idempotency import claims_prune
from app.outbox import outbox_prune, outbox_relay
from app.records import records_prune


@shared_task
def relay_outbox() -> int:
    """Publish outbox rows whose publish after commit failed (the broker was down)."""
    return outbox_relay()


@shared_task
def prune_jobs() -> dict[str, int]:
    """Delete ended job records, sent outbox rows and effect claims past the retention age."""
    before = timezone.now() - timedelta(days=settings.JOBS_RETENTION_DAYS)
    return {
        "records": records_prune(before=before),
        "outbox": outbox_prune(before=before),
        "claims": claims_prune(before=before),
    }
