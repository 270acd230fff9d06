"""The template's no-op job: workers load it with ``--include tests.bench.noop``.

``tests.bench.*`` matches no route in config/queues.py, so it runs on ``default``.
"""

from __future__ import annotations

from celery import shared_task

from tests.bench import probe  # noqa: F401  (connects the timing signals in bench workers)

NAME = "tests.bench.noop.noop"


@shared_task(name=NAME)
def noop() -> None:
    """Does nothing: the benchmark measures what is around a task, not the task."""
