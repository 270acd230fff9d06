"""A worker killed mid-job loses nothing: the job runs again and completes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests import jobs
from tests.support import Broker, read_events, running_worker, wait_for

pytestmark = pytest.mark.slow


def started(events: Path) -> list[dict]:
    return [e for e in read_events(events) if e["event"] == "start"]


def finished(events: Path) -> list[dict]:
    return [e for e in read_events(events) if e["event"] == "done"]


def test_pool_child_killed_mid_job_runs_again_and_completes(
    broker: Broker, events: Path, tmp_path: Path
) -> None:
    with running_worker(log_dir=tmp_path):
        result = jobs.record.delay(str(events), sleep=2)
        first = wait_for(lambda: started(events), what="the job to start")[0]
        os.kill(first["pid"], signal.SIGKILL)
        wait_for(lambda: finished(events), timeout=30, what="the job to complete")
    assert [e["task_id"] for e in started(events)] == [result.id, result.id]
    assert len(finished(events)) == 1
    assert broker.depth("default") == 0 and broker.depth("default.dead") == 0


def test_whole_worker_killed_mid_job_the_next_worker_completes_it(
    broker: Broker, events: Path, tmp_path: Path
) -> None:
    with running_worker(log_dir=tmp_path) as worker:
        result = jobs.record.delay(str(events), sleep=2)
        wait_for(lambda: started(events), what="the job to start")
        worker.kill()
    assert finished(events) == []
    assert broker.depth("default") == 1  # RabbitMQ took the unacked message back
    with running_worker(log_dir=tmp_path):
        wait_for(lambda: finished(events), timeout=30, what="the job to complete")
    assert [e["task_id"] for e in finished(events)] == [result.id]


def test_a_job_that_always_kills_its_worker_ends_dead_not_in_a_loop(
    broker: Broker, events: Path, tmp_path: Path
) -> None:
    with running_worker(log_dir=tmp_path) as worker:
        result = jobs.kill_own_process.delay(str(events))
        message = wait_for(lambda: broker.get("default.dead"), timeout=30, what="dead letter")
        assert worker.ping()  # the worker replaced its child and carries on
    assert message.headers["id"] == result.id
    assert len(started(events)) == 2  # first run plus max_retries=1


def test_a_worker_stopped_for_a_deploy_finishes_its_job_and_acks_it(
    broker: Broker, events: Path, tmp_path: Path
) -> None:
    with running_worker(log_dir=tmp_path):
        jobs.record.delay(str(events), sleep=2)
        wait_for(lambda: started(events), what="the job to start")
    # Leaving the block sent SIGTERM to the worker's main process (a warm shutdown).
    assert len(started(events)) == 1 and len(finished(events)) == 1
    assert broker.depth("default") == 0 and broker.depth("default.dead") == 0
