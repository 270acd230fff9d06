"""The worker's message consumer, with one change: undecodable messages are dead-lettered.

Celery's consumer logs a message whose body cannot be decoded and acknowledges it, which drops it
for good. Rejecting it without requeue sends it to ``<queue>.dead`` instead, where it can be read.
"""

from __future__ import annotations

import logging

from celery.worker.consumer import Consumer
from kombu.message import Message

logger = logging.getLogger(__name__)


class DeadLetteringConsumer(Consumer):  # type: ignore[misc]
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
