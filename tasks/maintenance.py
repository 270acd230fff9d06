"""Housekeeping jobs, scheduled in config/schedule.py."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from app.alerts import alerts_check
from app.idempotency import claims_prune
from app.outbox import outbox_prune, outbox_relay
from app.records import records_prune


@shared_task
def relay_outbox() -> int:
    """Publish outbox rows whose publish after commit failed (the broker was down)."""
    return outbox_relay()


@shared_task(tracked=True)  # its outcome shows in the periodic tasks admin
def prune_jobs() -> dict[str, int]:
    """Delete ended job records, sent outbox rows and effect claims past the retention age."""
    before = timezone.now() - timedelta(days=settings.JOBS_RETENTION_DAYS)
    return {
        "records": records_prune(before=before),
        "outbox": outbox_prune(before=before),
        "claims": claims_prune(before=before),
    }


@shared_task
def check_alerts() -> dict[str, int]:
    """Check failure rates, dead-letter queues, waiting jobs and the outbox; notify what started
    or stopped firing (app/alerts.py). Routed to the email queue (config/queues.py): a backlog
    in ``default``, one of the things it watches, would otherwise hold it back."""
    transitions = alerts_check()
    return {
        "firing": sum(t.state == "firing" for t in transitions),
        "resolved": sum(t.state == "resolved" for t in transitions),
    }
