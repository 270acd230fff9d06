"""Task events, which Flower shows: a worker sending them keeps working."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from celery.events.event import get_exchange
from kombu import Queue

from config.celery import app as celery_app
from tests.support import Broker, running_worker, wait_for

pytestmark = pytest.mark.slow


def test_a_worker_sends_task_events_from_its_first_job(broker: Broker, tmp_path: Path) -> None:
    """Flower switches events on when it asks, seconds after a start: the jobs run before then
    were missing from it. Here nobody asks."""
    with broker.connection() as conn:
        listener = Queue(
            f"test-events-{uuid.uuid4().hex[:8]}",
            get_exchange(conn),
            routing_key="task.#",
            durable=False,
            auto_delete=False,
        )(conn.default_channel)
        listener.declare()
        try:
            with running_worker(log_dir=tmp_path):
                celery_app.send_task("tests.jobs.noop")
                wait_for(lambda: broker.depth(listener.name) > 0, what="a task event")
        finally:
            listener.delete()


def test_the_threads_worker_drains_its_queue_with_task_events_on(
    broker: Broker, tmp_path: Path
) -> None:
    """The events connection is also read by the worker's event loop (for heartbeats), so a pool
    thread waiting there for the confirm of an event could have it read away and wait forever.
    It did, after a few hundred to a few thousand no-op jobs: bin/worker-io hung as soon as
    Flower switched events on."""
    n = 5000
    with celery_app.producer_or_acquire() as producer:
        for _ in range(n):
            celery_app.send_task("tests.jobs.noop", producer=producer)
    with running_worker(
        queues_="default",
        pool="threads",
        concurrency=8,
        log_dir=tmp_path,
        env={"LOG_LEVEL": "WARNING"},
        extra_args=("--prefetch-multiplier", "1", "--task-events", "--loglevel", "WARNING"),
    ):
        # Each of the 8 threads holds one message at most: a hung worker leaves the rest ready.
        wait_for(lambda: broker.depth("default") == 0, timeout=120, what=f"{n} jobs taken")
