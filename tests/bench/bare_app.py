"""A bare ``Celery()`` app, Celery's defaults only, as the baseline the template is compared to.

Workers run it with ``celery -A tests.bench.bare_app``; the broker URL comes from
``BENCH_BROKER_URL``, and ``BENCH_ACKS_LATE=1`` turns on ``task_acks_late`` (its one variant).
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Exchange, Queue

from tests.bench import probe  # noqa: F401  (connects the timing signals in bench workers)

NOOP = "tests.bench.bare_app.noop"
#: Celery's default queue, as a bare app declares it, publishes to and consumes.
QUEUE = Queue("celery", Exchange("celery", type="direct"), routing_key="celery")


def make_app(broker_url: str, *, acks_late: bool = False) -> Celery:
    """Default settings, except ``ignore_result`` on the task (there is no backend anyway)."""
    app = Celery("bare", broker=broker_url, set_as_current=False)
    if acks_late:
        app.conf.task_acks_late = True

    @app.task(name=NOOP, ignore_result=True, shared=False)
    def noop() -> None:
        """Does nothing."""

    return app


app = make_app(
    os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    acks_late=os.environ.get("BENCH_ACKS_LATE") == "1",
)
