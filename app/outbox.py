"""Publishing outbox rows: right after commit, or later by the relay when the broker was down.

A row is published while it is locked (``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL), and
marked sent in the same transaction, so relays running side by side never publish a row twice.
A crash between the broker's confirm and the commit can publish a row again: delivery is at
least once, and the worker skips a redelivered job that already ended.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone
from kombu import Connection, pools

from app.models import OutboxMessage
from config.celery import app as celery_app

logger = logging.getLogger(__name__)

#: Seconds to wait for the broker's confirms of one relay batch.
CONFIRM_TIMEOUT = 30.0


class PublishNotConfirmed(Exception):
    """RabbitMQ refused (nack) or did not confirm a message in time."""


def _connection(*, confirm_each: bool) -> Connection:
    """A broker connection that tries once: a down broker must not stall a web request."""
    options = {**celery_app.conf.broker_transport_options, "max_retries": 0}
    options["confirm_publish"] = confirm_each
    return celery_app.connection_for_write(transport_options=options)


def _send(row: OutboxMessage, producer: Any) -> None:
    options: dict[str, Any] = dict(row.options)
    if options.get("eta"):
        options["eta"] = datetime.fromisoformat(options["eta"])
    celery_app.send_task(
        row.task_name,
        args=row.args,
        kwargs=row.kwargs,
        task_id=str(row.task_id),
        producer=producer,
        retry=False,
        **options,
    )


def outbox_publish_one(*, message_id: int) -> bool:
    """Publish one row right after its transaction committed. False leaves it to the relay."""
    try:
        with transaction.atomic():
            row = (
                OutboxMessage.objects.select_for_update(skip_locked=True)
                .filter(id=message_id, sent_at__isnull=True)
                .first()
            )
            if row is None:
                return True  # sent already, or a relay holds it right now
            with pools.producers[_connection(confirm_each=True)].acquire(block=True) as producer:
                _send(row, producer)
            row.sent_at = timezone.now()
            row.save(update_fields=["sent_at"])
        return True
    except Exception as exc:  # any publish failure: the row stays pending; the relay retries it
        logger.warning("broker unavailable, outbox row %s left for the relay: %s", message_id, exc)
        return False


def _publish_batch(rows: Iterable[OutboxMessage]) -> int:
    """Publish rows without waiting message by message, then wait for all the confirms."""
    with _connection(confirm_each=False) as conn:
        channel: Any = conn.default_channel
        channel.confirm_select()
        state = {"acked": 0, "nacked": 0}

        def on_ack(delivery_tag: int, multiple: bool) -> None:
            state["acked"] = delivery_tag if multiple else state["acked"] + 1

        def on_nack(delivery_tag: int, multiple: bool) -> None:
            state["nacked"] += 1

        channel.events["basic_ack"].add(on_ack)
        channel.events["basic_nack"].add(on_nack)
        producer = celery_app.amqp.Producer(channel)
        sent = 0
        for row in rows:
            _send(row, producer)
            sent += 1
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        while state["acked"] < sent and not state["nacked"]:
            if time.monotonic() > deadline:
                raise PublishNotConfirmed(f"{sent - state['acked']} of {sent} not confirmed")
            conn.drain_events(timeout=1)
        if state["nacked"]:
            raise PublishNotConfirmed(f"RabbitMQ refused {state['nacked']} of {sent} messages")
        return sent


def outbox_relay(*, batch_size: int = 500, max_batches: int | None = None) -> int:
    """Publish pending rows, oldest first, a locked batch at a time. Returns how many."""
    published = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        with transaction.atomic():
            rows = list(
                OutboxMessage.objects.select_for_update(skip_locked=True)
                .filter(sent_at__isnull=True)
                .order_by("id")[:batch_size]
            )
            if not rows:
                break
            _publish_batch(rows)
            OutboxMessage.objects.filter(id__in=[r.id for r in rows]).update(sent_at=timezone.now())
        published += len(rows)
        batches += 1
    return published


def outbox_prune(*, before: datetime) -> int:
    """Delete rows sent before ``before``. Pending rows are never deleted."""
    deleted, _ = OutboxMessage.objects.filter(sent_at__lt=before).delete()
    return deleted
