"""``manage.py tasks``: every registered task and what it will do, the one place to look."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celery import current_app
from celery.app.task import Task
from celery.exceptions import QueueNotFound
from django.core.management.base import BaseCommand, CommandParser

from app.errors import TRANSIENT_ERRORS


@dataclass(frozen=True)
class TaskPolicy:
    name: str
    queue: str
    tracked: bool
    retries: str
    time_limits: str
    rate_limit: str


def task_policy(task: Task) -> TaskPolicy:
    """Where ``task`` runs and how it retries, as a publish and a worker would see them."""
    options = {k: v for k, v in task._get_exec_options().items() if v is not None}
    try:
        queue = current_app.amqp.router.route(options, task.name)["queue"].name
    except QueueNotFound:  # publishing it fails the same way: say so here first
        queue = f"{getattr(task, 'queue', None) or options.get('queue')}(MISSING)"
    autoretry = getattr(task, "autoretry_for", ())
    if autoretry and task.max_retries:
        backoff = ""
        if getattr(task, "retry_backoff", 0):
            backoff = f", backoff up to {task.retry_backoff_max}s"
        jitter = " with jitter" if backoff and getattr(task, "retry_jitter", False) else ""
        names = (
            "TRANSIENT_ERRORS"
            if tuple(autoretry) == TRANSIENT_ERRORS
            else ", ".join(exc.__name__ for exc in autoretry)
        )
        retries = f"{task.max_retries} on {names}{backoff}{jitter}"
    else:
        retries = "none"
    soft, hard = task.soft_time_limit, task.time_limit
    return TaskPolicy(
        name=task.name,
        queue=queue,
        tracked=bool(getattr(task, "tracked", False)),
        retries=retries,
        time_limits=f"{soft or '-'}s/{hard or '-'}s",
        rate_limit=task.rate_limit or "-",
    )


def task_policies(*, include_celery: bool = False) -> list[TaskPolicy]:
    return [
        task_policy(task)
        for name, task in sorted(current_app.tasks.items())
        if include_celery or not name.startswith("celery.")
    ]


class Command(BaseCommand):
    help = "List every registered task: queue, tracked, retry policy, time limits, rate limit."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--all", action="store_true", help="Celery's built-in tasks too")

    def handle(self, *args: Any, all: bool = False, **options: Any) -> None:
        rows = [
            ("task", "queue", "tracked", "time limits soft/hard", "rate limit", "retries"),
            *(
                (p.name, p.queue, "yes" if p.tracked else "no", p.time_limits, p.rate_limit,
                 p.retries)
                for p in task_policies(include_celery=all)
            ),
        ]  # fmt: skip
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            self.stdout.write("  ".join([*cells, row[-1]]).rstrip())
