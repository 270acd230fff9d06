"""Sentry Crons: with SENTRY_DSN set, beat jobs check in (sentry-sdk's Celery integration with
``monitor_beat_tasks``), through a real beat and a real worker, to a local Sentry stand-in."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from tests.sentry import SentryStandIn
from tests.support import Broker, running_beat, running_worker, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def due_every_minute(name: str, task: str, **kwargs: Any) -> None:
    """A schedule beat sends as soon as it starts: it last ran over a minute ago. A minute is
    Sentry Crons' shortest interval; shorter ones get no monitor."""
    every_minute, _ = IntervalSchedule.objects.get_or_create(
        every=60, period=IntervalSchedule.SECONDS
    )
    PeriodicTask.objects.create(
        name=name,
        task=task,
        interval=every_minute,
        kwargs=json.dumps(kwargs),
        last_run_at=timezone.now() - timedelta(minutes=2),
    )


def statuses(sentry: SentryStandIn) -> dict[str, list[str]]:
    by_slug: dict[str, list[str]] = defaultdict(list)
    for check_in in sentry.check_ins():
        by_slug[check_in["monitor_slug"]].append(check_in["status"])
    return dict(by_slug)


def exception_type(event: dict[str, Any]) -> str | None:
    values = event.get("exception", {}).get("values") or [{}]
    return values[-1].get("type")  # type: ignore[no-any-return]


def test_beat_jobs_check_in_and_only_final_failures_reach_sentry_without_arguments(
    broker: Broker, events: Path, tmp_path: Path, sentry: SentryStandIn
) -> None:
    """Beat sends "in progress" as it sends a job; the worker "ok" or "error" as it ends, with
    the same check-in id. A retry is not a failure: the run checks in "ok" once its retry
    succeeds, and nothing about the transient error reaches Sentry. The failing job's error
    event carries its task context, but no argument value."""
    address = "ada.lovelace@example.com"
    due_every_minute("test: succeeds", "tests.jobs.record", path=str(events))
    due_every_minute("test: retried once", "tests.jobs.flaky", path=str(events), failures=1)
    due_every_minute(
        "test: fails", "tests.jobs.fails_with_personal_data", path=str(events), email=address
    )
    env = {"SENTRY_DSN": sentry.dsn}
    # Beat first: it starts while the worker does (which waits for its ping).
    with running_beat(log_dir=tmp_path, env=env), running_worker(log_dir=tmp_path, env=env):
        wait_for(
            lambda: len(sentry.check_ins()) >= 6 and len(sentry.events()) >= 1,
            timeout=60,
            what=f"three runs to end their check-ins: {statuses(sentry)}",
        )
    check_ins = sentry.check_ins()
    # One run each: the runs ended in a minute, and beat sends the next a minute later.
    assert statuses(sentry) == {
        "test: succeeds": ["in_progress", "ok"],
        "test: retried once": ["in_progress", "ok"],
        "test: fails": ["in_progress", "error"],
    }
    for slug in ("test: succeeds", "test: retried once", "test: fails"):
        ids = {c["check_in_id"] for c in check_ins if c["monitor_slug"] == slug}
        assert len(ids) == 1, f"{slug}: one run, one check-in id: {ids}"
    every_minute = {"type": "interval", "value": 1, "unit": "minute"}
    assert all(c["monitor_config"]["schedule"] == every_minute for c in check_ins)
    assert {c["monitor_config"]["timezone"] for c in check_ins} == {settings.CELERY_TIMEZONE}
    everything = "\n".join(sentry.envelopes)
    assert "attempt 1 fails" not in everything  # the transient error: retried, not a failure
    failure = next(e for e in sentry.events() if exception_type(e) == "PermanentError")
    assert failure["extra"]["celery-job"]["task_name"] == "tests.jobs.fails_with_personal_data"
    assert address not in everything.lower()
