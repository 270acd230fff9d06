"""A rate limit that holds across every worker process and machine sharing the database.

Celery's ``rate_limit`` task option is per worker: two workers send twice as fast. Here each
unit of work reserves the next free slot of its key in one short transaction (a row lock on
PostgreSQL, the write lock on SQLite), then sleeps until the slot comes:

    for message in messages:
        rate_wait(key="smtp", per_second=conf.SEND_RATE)
        send(message)

Slots are spaced evenly, ``1 / per_second`` apart, with no burst: a provider's "14 messages per
second" holds over any window. Reserve the slot before claiming the work, so that a process
stopped while it sleeps leaves nothing half done. Times come from each machine's clock: keep
them in sync (NTP), as a lease or a cron needs anyway.
"""

from __future__ import annotations

import time

from django.db import transaction

from app.models import RateSlot


def rate_wait(*, key: str, per_second: float) -> float:
    """Wait for this process's turn at ``key``; return the seconds waited. ``per_second`` of 0
    or less means no limit (and no database round trip)."""
    if per_second <= 0:
        return 0.0
    with transaction.atomic():
        slot, _ = RateSlot.objects.select_for_update().get_or_create(key=key)
        now = time.time()
        start = max(slot.next_at, now)
        slot.next_at = start + 1.0 / per_second
        slot.save(update_fields=["next_at"])
    delay = start - now
    if delay > 0:
        time.sleep(delay)
    return delay
