"""Sentry hears of a job once, when it ends dead, never of a retry; with its task context as tags
and without its arguments. Real workers, a local Sentry stand-in (tests/sentry.py)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from app.context import MESSAGE_HEADER
from tests import jobs
from tests.sentry import SentryStandIn
from tests.support import Broker, read_events, running_worker, wait_for

pytestmark = pytest.mark.slow


def events_by_task(sentry: SentryStandIn) -> dict[str, list[dict[str, Any]]]:
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in sentry.events():
        by_task[event.get("tags", {}).get("task", "?")].append(event)
    return dict(by_task)


def test_a_job_reaches_sentry_once_when_it_ends_dead_never_for_a_retry(
    broker: Broker, events: Path, tmp_path: Path, sentry: SentryStandIn
) -> None:
    """The threads pool, as bin/worker-io runs the default queue."""
    env = {"SENTRY_DSN": sentry.dsn}
    with running_worker(pool="threads", concurrency=4, log_dir=tmp_path, env=env):
        permanent = jobs.permanent.apply_async(
            [str(events)], headers={MESSAGE_HEADER: "req-sentry-1"}
        )
        jobs.flaky.delay(str(events), failures=2)  # retried twice, then succeeds
        retried_then_dead = jobs.transient_until_dead.delay(str(events))  # retried twice, dead
        wait_for(
            lambda: (
                broker.depth("default.dead") == 2
                and any(e["event"] == "done" for e in read_events(events))
            ),
            timeout=60,
            what="two jobs dead, one succeeded after its retries",
        )
    # The worker has stopped: whatever it had to send is sent.
    assert sorted(events_by_task(sentry)) == [
        "tests.jobs.permanent",
        "tests.jobs.transient_until_dead",
    ]
    (failed,) = events_by_task(sentry)["tests.jobs.permanent"]
    assert failed["tags"] == {
        **failed["tags"],
        "task": "tests.jobs.permanent",
        "task_id": permanent.id,
        "attempt": "1",
        "queue": "default",
        "correlation_id": "req-sentry-1",
    }
    assert failed["exception"]["values"][-1]["type"] == "PermanentError"
    (dead,) = events_by_task(sentry)["tests.jobs.transient_until_dead"]
    assert (dead["tags"]["task_id"], dead["tags"]["attempt"]) == (retried_then_dead.id, "3")
    assert dead["exception"]["values"][-1]["type"] == "TransientError"
    everything = "\n".join(sentry.envelopes)
    assert "attempt 1 fails" not in everything  # the flaky job's transient errors
    assert str(events) not in everything  # every job's one argument


@pytest.mark.django_db
def test_a_job_that_dies_without_raising_reaches_sentry_once_from_its_dead_letter(
    broker: Broker, events: Path, tmp_path: Path, sentry: SentryStandIn
) -> None:
    """Its hard time limit, or its worker killed on its last attempt: no exception reached
    Sentry from the process that ran it, so the dead-letter line is the event (prefork: the
    pool that enforces time limits, and that survives a child's death)."""
    env = {"SENTRY_DSN": sentry.dsn}
    with running_worker(log_dir=tmp_path, env=env):
        killed = jobs.kill_own_process.delay(str(events))  # killed twice: retried once, dead
        timed_out = jobs.ignores_soft_time_limit.delay(str(events))
        wait_for(lambda: broker.depth("default.dead") == 2, timeout=60, what="both jobs dead")
    by_task = events_by_task(sentry)
    assert sorted(by_task) == ["tests.jobs.ignores_soft_time_limit", "tests.jobs.kill_own_process"]
    (lost,) = by_task["tests.jobs.kill_own_process"]
    assert (lost["tags"]["task_id"], lost["tags"]["attempt"], lost["tags"]["queue"]) == (
        killed.id,
        "2",
        "default",
    )
    assert lost["fingerprint"] == ["dead-lettered", "tests.jobs.kill_own_process", "worker-lost"]
    (limit,) = by_task["tests.jobs.ignores_soft_time_limit"]
    assert limit["tags"]["task_id"] == timed_out.id
    assert limit["fingerprint"][-1] == "time-limit"
