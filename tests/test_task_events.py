"""Task events, which Flower shows: a worker sending them keeps working."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.celery import app as celery_app
from tests.support import Broker, running_worker, wait_for

pytestmark = pytest.mark.slow


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
