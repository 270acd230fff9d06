"""Transient failures are retried with growing delays; permanent ones end in <queue>.dead."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests import jobs
from tests.support import Broker, json_lines, read_events, running_worker, wait_for

pytestmark = pytest.mark.slow


def dead_message(broker: Broker, queue: str = "default") -> Any:
    return wait_for(lambda: broker.get(f"{queue}.dead"), what=f"a message in {queue}.dead")


def test_transient_errors_are_retried_with_growing_delays_then_succeed(
    broker: Broker, events: Path, tmp_path: Path
) -> None:
    with running_worker(log_dir=tmp_path):
        jobs.flaky.delay(str(events), failures=2)
        wait_for(lambda: any(e["event"] == "done" for e in read_events(events)), what="success")
    starts = [e for e in read_events(events) if e["event"] == "start"]
    assert [e["attempt"] for e in starts] == [1, 2, 3]
    first_delay = starts[1]["at"] - starts[0]["at"]
    second_delay = starts[2]["at"] - starts[1]["at"]
    # Exponential backoff of 1 s, then 2 s (jitter is off for this job).
    assert 0.9 < first_delay < 1.9, first_delay
    assert 1.9 < second_delay < 2.9, second_delay
    assert broker.depth("default.dead") == 0


def test_out_of_retries_ends_dead_and_is_not_retried_again(
    broker: Broker, events: Path, tmp_path: Path
) -> None:
    with running_worker(log_dir=tmp_path) as worker:
        result = jobs.always_transient.delay(str(events))
        message = dead_message(broker)
        time.sleep(2)  # time for a (wrong) further retry to show up
        log = worker.output()
    assert [e["attempt"] for e in read_events(events)] == [1, 2]
    assert message.headers["id"] == result.id
    death = message.headers["x-death"][0]
    assert (death["reason"], death["queue"]) == ("rejected", "default")
    assert broker.depth("default") == 0
    of_job = [line for line in json_lines(log) if line.get("task_id") == result.id]
    assert {line["attempt"] for line in of_job if "attempt" in line} == {1, 2}
    dead = [line for line in of_job if line["message"].endswith("dead-lettered to default.dead")]
    assert [(line["attempt"], line["cause"]) for line in dead] == [(2, "exception")]


def test_permanent_error_goes_dead_on_the_first_attempt(
    broker: Broker, events: Path, tmp_path: Path
) -> None:
    with running_worker(log_dir=tmp_path) as worker:
        result = jobs.permanent.delay(str(events))
        message = dead_message(broker)
        time.sleep(1)
        log = worker.output()
    assert [e["attempt"] for e in read_events(events)] == [1]
    assert message.headers["id"] == result.id
    assert message.headers["x-death"][0]["reason"] == "rejected"
    assert "PermanentError: this input can never work" in log


def test_a_job_past_its_hard_time_limit_is_dead_lettered_not_requeued(
    broker: Broker, events: Path, tmp_path: Path
) -> None:
    with running_worker(log_dir=tmp_path):
        result = jobs.ignores_soft_time_limit.delay(str(events))
        message = dead_message(broker)
        time.sleep(1)
    assert message.headers["id"] == result.id
    assert [e["event"] for e in read_events(events)] == ["start", "soft-limit"]
    assert broker.depth("default") == 0
