"""Publishing outbox rows: right after commit, or later by the relay when the broker was down.

A row is published while it is locked (``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL), and
marked sent in the same transaction, so relays running side by side never publish a row twice.
A crash between the broker's confirm and the commit can publish a row again: delivery is at
least once, and the worker skips a redelivered job that already ended. SQLite has no row locks:
there, run a single relay.

A row that cannot be published for a reason of its own (a route to an undeclared queue,
arguments the serializer refuses) gets its ``error`` set and is left out of later relays, so it
never blocks the rows behind it. Only an error raised by publishing the row itself can be such a
reason: a broker outage, or any database error while the row is read or marked (a locked SQLite
file, a dropped connection, a serialization failure), leaves the row pending for the relay.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from amqp.exceptions import ConnectionError as ConnectionError_
from amqp.exceptions import MessageNacked
from django.db import Error as DatabaseError
from django.db import transaction
from django.utils import timezone
from kombu import Connection, pools
from kombu.exceptions import OperationalError

from app.models import OutboxMessage
from config.celery import app as celery_app

logger = logging.getLogger(__name__)

#: Seconds to wait for the confirm of one message, and of one relay batch. A broker under a
#: memory or disk alarm confirms nothing: a web request must not hang on it.
CONFIRM_TIMEOUT = 5.0
BATCH_CONFIRM_TIMEOUT = 30.0


class PublishNotConfirmed(Exception):
    """RabbitMQ refused (nack) or did not confirm messages in time."""


#: What a broker that is down, restarting, unreachable or refusing raises (amqp's connection
#: errors and nacks are neither OSError nor kombu's OperationalError). Anything else is the
#: row's own fault, such as a route to a queue that does not exist (amqp's channel errors).
BROKER_DOWN = (
    OperationalError,
    OSError,
    PublishNotConfirmed,
    ConnectionError_,
    MessageNacked,
)


def _connection(*, confirm_each: bool) -> Connection:
    """A broker connection that tries once: a down broker must not stall a web request."""
    options = {**celery_app.conf.broker_transport_options, "max_retries": 0}
    options["confirm_publish"] = confirm_each
    return celery_app.connection_for_write(transport_options=options)


@lru_cache(maxsize=4)
def _publish_pool_key(broker_url: str) -> Connection:
    """The (unconnected) connection that keys the pool of confirming producers a web process
    publishes through. Made once per broker URL: making one costs 0.3 ms (kombu looks for
    librabbitmq each time), on every request that enqueues."""
    return _connection(confirm_each=True)


def _send(row: OutboxMessage, producer: Any) -> None:
    options: dict[str, Any] = dict(row.options)
    for name in ("eta", "expires"):  # kept as text (a beat run's expiry can be a datetime)
        if isinstance(options.get(name), str):
            options[name] = datetime.fromisoformat(options[name])
    celery_app.send_task(
        row.task_name,
        args=row.args,
        kwargs=row.kwargs,
        task_id=str(row.task_id),
        producer=producer,
        retry=False,
        confirm_timeout=CONFIRM_TIMEOUT,
        **options,
    )


def _row_fault(exc: Exception) -> bool:
    """Whether ``exc``, raised by ``_send``, is the row's own fault rather than an outage."""
    return not isinstance(exc, (*BROKER_DOWN, DatabaseError))


def _mark_broken(row_id: int, exc: Exception) -> None:
    """Set the row aside; called in the transaction that holds it, so a database error here
    rolls back and leaves the row pending."""
    logger.error("outbox row %s cannot be published: %r", row_id, exc)
    OutboxMessage.objects.filter(id=row_id).update(error=f"{type(exc).__name__}: {exc}"[:500])


def _send_or_set_aside(row: OutboxMessage, producer: Any) -> bool:
    """Publish ``row``; False when it can never be published (then set aside). An outage
    raises, leaving the row pending."""
    try:
        _send(row, producer)
    except Exception as exc:
        if not _row_fault(exc):
            raise
        _mark_broken(row.id, exc)
        return False
    return True


def outbox_publish_one(*, message_id: int) -> bool:
    """Publish one row right after its transaction committed. False leaves it to the relay.

    It runs after the request's commit, so it never raises: the request stands either way.
    """
    try:
        with transaction.atomic():
            row = (
                OutboxMessage.objects.select_for_update(skip_locked=True)
                .filter(id=message_id, sent_at__isnull=True)
                .first()
            )
            if row is None:
                return True  # sent already, or a relay holds it right now
            pool = pools.producers[_publish_pool_key(celery_app.conf.broker_url)]
            with pool.acquire(block=True) as producer:
                if not _send_or_set_aside(row, producer):
                    return False
            row.sent_at = timezone.now()
            row.save(update_fields=["sent_at"])
        return True
    except BROKER_DOWN as exc:
        logger.warning("broker unavailable, outbox row %s left for the relay: %s", message_id, exc)
    except DatabaseError as exc:
        # Published or not, the row stays pending: the relay sends it (again: at least once).
        logger.warning("database error, outbox row %s left for the relay: %r", message_id, exc)
    except Exception:  # a bug, not the row's content: keep the row, say what happened
        logger.exception("outbox row %s left for the relay after an unexpected error", message_id)
    return False


def _publish_batch(rows: Sequence[OutboxMessage]) -> list[OutboxMessage]:
    """Publish rows without waiting one by one, then wait for every confirm.

    Returns the rows published; rows that fail for a reason of their own are marked and skipped.
    Raises when the broker fails, so the caller's transaction keeps them all pending.
    """
    with _connection(confirm_each=False) as conn:
        channel: Any = conn.default_channel
        channel.confirm_select()
        confirmed: set[int] = set()
        nacked: list[int] = []

        def on_ack(delivery_tag: int, multiple: bool) -> None:
            confirmed.update(range(1, delivery_tag + 1) if multiple else (delivery_tag,))

        def on_nack(delivery_tag: int, multiple: bool) -> None:
            nacked.append(delivery_tag)

        channel.events["basic_ack"].add(on_ack)
        channel.events["basic_nack"].add(on_nack)
        producer = celery_app.amqp.Producer(channel)
        published = [row for row in rows if _send_or_set_aside(row, producer)]
        deadline = time.monotonic() + BATCH_CONFIRM_TIMEOUT
        while len(confirmed) < len(published) and not nacked:
            if time.monotonic() > deadline:
                missing = len(published) - len(confirmed)
                raise PublishNotConfirmed(f"{missing} of {len(published)} not confirmed")
            try:
                conn.drain_events(timeout=1)
            except TimeoutError:  # a quiet second; the deadline decides
                continue
        if nacked:
            raise PublishNotConfirmed(f"RabbitMQ refused {len(nacked)} of {len(published)}")
        return published


def outbox_relay(*, batch_size: int = 500, max_batches: int | None = None) -> int:
    """Publish pending rows, oldest first, a locked batch at a time. Returns how many."""
    published = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        with transaction.atomic():
            rows = list(
                OutboxMessage.objects.select_for_update(skip_locked=True)
                .filter(sent_at__isnull=True, error="")
                .order_by("id")[:batch_size]
            )
            if not rows:
                break
            sent = _publish_batch(rows)
            OutboxMessage.objects.filter(id__in=[r.id for r in sent]).update(sent_at=timezone.now())
        published += len(sent)
        batches += 1
    return published


def outbox_prune(*, before: datetime) -> int:
    """Delete rows sent before ``before``. Pending rows are never deleted."""
    deleted, _ = OutboxMessage.objects.filter(sent_at__lt=before).delete()
    return deleted
