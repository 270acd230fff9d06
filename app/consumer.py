"""The worker's message consumer, with two changes.

- Undecodable messages are dead-lettered. Celery's consumer logs a message whose body cannot be
  decoded and acknowledges it, which drops it for good. Rejecting it without requeue sends it to
  ``<queue>.dead`` instead, where it can be read.
- Monitoring events are published without publisher confirms. The worker's event loop also reads
  the events connection (for broker heartbeats), so a pool thread of the threads pool waiting
  there for the confirm of an event could have it read away and wait forever, holding the
  dispatcher's lock: the whole worker hung once task events were on (Flower switches them on). An
  event is monitoring, not a job; the job messages themselves keep their confirms.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer
from kombu import Connection
from kombu.message import Message

logger = logging.getLogger(__name__)


class DeadLetteringConsumer(Consumer):  # type: ignore[misc]
    def connection_for_write(self, url: str | None = None, heartbeat: Any = None) -> Connection:
        """The events connection (the Events bootstep is Celery's only caller), unconfirmed."""
        connection = self.app.connection_for_write(
            url=url, heartbeat=heartbeat, transport_options={"confirm_publish": False}
        )
        return self.ensure_connected(connection)

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        logger.critical(
            "cannot decode message (%s: %s; content-type %r, encoding %r, headers %r): "
            "dead-lettered",
            type(exc).__name__,
            exc,
            message.content_type,
            message.content_encoding,
            message.headers,
        )
        message.reject(requeue=False)
