"""THE table of queues, dead-letter queues and routes.

One queue per kind of work, so a flood of exports never delays a password-reset email. Every
queue dead-letters into ``<name>.dead`` through the ``dead`` exchange: a message that is rejected
without requeue (a permanent failure, retries used up, an undecodable body, an unknown task name)
is kept there with RabbitMQ's ``x-death`` header saying why, until an operator replays or purges it.

To add a queue: add a line to ``QUEUES``, route task modules to it in ``ROUTES``, and give it a
worker in ``bin/`` (see the Procfile).
"""

from __future__ import annotations

from typing import Any

from kombu import Exchange, Queue

#: Queue name -> what runs there. Order matters only for readability.
QUEUES: dict[str, str] = {
    "default": "small, quick jobs with no queue of their own",
    "email": "email and notifications: I/O bound, must not wait behind bulk work",
    "email_bulk": "bulk email batches: hours at a provider's rate, apart from single emails",
    "api": "calls to remote APIs and webhooks: I/O bound, often slow or flaky",
    "exports": "CSV/XLSX exports: CPU and database heavy, long running",
    "images": "image resizing and conversion: CPU bound",
}

#: Task name pattern -> queue. The first match wins; anything else goes to ``default``.
#: A task can still pick its own queue with ``@shared_task(queue=...)``.
ROUTES: dict[str, str] = {
    # The alert check watches how long jobs wait in default: it must not wait behind them.
    "tasks.maintenance.check_alerts": "email",
    "tasks.email.bulk": "email_bulk",
    "tasks.email.send_batch": "email_bulk",
    "tasks.email.*": "email",
    "tasks.notifications.*": "email",
    "tasks.syncs.*": "api",
    "tasks.webhooks.*": "api",
    "tasks.exports.*": "exports",
    "tasks.images.*": "images",
}

DEFAULT_QUEUE = "default"
DEAD_SUFFIX = ".dead"

#: Where producers publish. Durable, direct: the routing key is the queue name.
TASK_EXCHANGE = Exchange("tasks", type="direct", durable=True)
#: Where RabbitMQ moves rejected messages; bound to ``<queue>.dead`` by the queue's name.
DEAD_LETTER_EXCHANGE = Exchange("dead", type="direct", durable=True)


class WorkQueue(Queue):
    """A work queue that declares its ``<name>.dead`` whenever it is declared itself.

    RabbitMQ silently drops a dead-lettered message when no queue is bound for it, so the dead
    queue must exist before the first reject. Workers declare their queues on every (re)connect
    and producers before publishing: with this, on a fresh broker or vhost too.
    """

    def declare(self, nowait: bool = False, channel: Any = None) -> Any:
        dead_queue(self.name)(channel or self.channel).declare()
        return super().declare(nowait=nowait, channel=channel)


def work_queue(name: str) -> Queue:
    """The queue workers consume, with its dead-letter route declared on it."""
    return WorkQueue(
        name,
        TASK_EXCHANGE,
        routing_key=name,
        durable=True,
        queue_arguments={
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE.name,
            "x-dead-letter-routing-key": name,
        },
    )


def dead_queue(name: str) -> Queue:
    """The queue that keeps what ``name`` rejected. Nothing consumes it automatically."""
    return Queue(name + DEAD_SUFFIX, DEAD_LETTER_EXCHANGE, routing_key=name, durable=True)


TASK_QUEUES = tuple(work_queue(name) for name in QUEUES)
DEAD_QUEUES = tuple(dead_queue(name) for name in QUEUES)
TASK_ROUTES = {pattern: {"queue": queue} for pattern, queue in ROUTES.items()}
