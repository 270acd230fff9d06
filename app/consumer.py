"""The worker's message consumer, with two changes.

- Every message that Celery cannot run is dead-lettered. Celery's own consumer acknowledges
  (drops) a message whose body cannot be decoded, and a message of the wrong shape (see
  ``app/protocol.py``) can stop the whole worker. Here each task message is checked before Celery
  touches it, and a bad one is rejected without requeue, which RabbitMQ moves to
  ``<queue>.dead`` with an ``x-death`` header, where ``manage.py jobs dead`` shows it.
- Monitoring events are published without publisher confirms. The worker's event loop also reads
  the events connection (for broker heartbeats), so a pool thread of the threads pool waiting
  there for the confirm of an event could have it read away and wait forever, holding the
  dispatcher's lock: the whole worker hung once task events were on (Flower switches them on). An
  event is monitoring, not a job; the job messages themselves keep their confirms.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer
from kombu import Connection
from kombu.message import Message

from app.protocol import message_problem

logger = logging.getLogger(__name__)


class DeadLetteringConsumer(Consumer):  # type: ignore[misc]
    def connection_for_write(self, url: str | None = None, heartbeat: Any = None) -> Connection:
        """The events connection (the Events bootstep is Celery's only caller), unconfirmed."""
        connection = self.app.connection_for_write(
            url=url, heartbeat=heartbeat, transport_options={"confirm_publish": False}
        )
        return self.ensure_connected(connection)

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        _dead_letter(message, f"cannot decode message ({type(exc).__name__}: {exc})")

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Message], None]:
        celery_handler = super().create_task_handler(*args, **kwargs)

        def on_task_received(message: Message) -> None:
            try:
                problem = message_problem(message)
                if problem:
                    _dead_letter(message, problem)
                    return
                celery_handler(message)
            except (*self.connection_errors, *self.channel_errors):
                raise  # Celery's own handling: reconnect (channel errors stop the worker)
            except Exception as exc:
                # The checks or Celery's handler broke on this message: raised here, it would
                # stop the worker (and every restart: the message is still queued). Dead-letter
                # it unless it was settled. (With late acks, a job handed to the pool is not
                # settled yet; Celery 5.7's handler raises nothing after the hand-off.)
                if message.acknowledged:
                    logger.exception("error after a message was settled; the worker carries on")
                else:
                    logger.exception("message broke the worker's handler")
                    _dead_letter(message, f"worker could not take it ({type(exc).__name__})")

        return on_task_received


def _dead_letter(message: Message, reason: str) -> None:
    headers: Any = message.headers if isinstance(message.headers, dict) else {}
    logger.error(
        "malformed message dead-lettered to %s.dead: %s (task %r, id %r, content-type %r, "
        "encoding %r)",
        message.delivery_info.get("routing_key", "?"),
        reason,
        headers.get("task"),
        headers.get("id"),
        message.content_type,
        message.content_encoding,
    )
    message.reject(requeue=False)
