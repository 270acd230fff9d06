"""The template's no-op jobs: workers load them with ``--include tests.bench.noop``.

``tests.bench.*`` matches no route in config/queues.py, so they run on ``default``.
"""

from __future__ import annotations

from celery import shared_task

from tests.bench import probe  # noqa: F401  (connects the timing signals in bench workers)

NAME = "tests.bench.noop.noop"
TRACKED_NAME = "tests.bench.noop.tracked_noop"


@shared_task(name=NAME)
def noop() -> None:
    """Does nothing: the benchmark measures what is around a task, not the task."""


@shared_task(name=TRACKED_NAME, tracked=True)
def tracked_noop() -> None:
    """Does nothing, with a job record: what tracking costs (two writes per job at least)."""
