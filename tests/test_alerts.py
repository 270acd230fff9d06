"""The alert check (app/alerts.py): thresholds crossed fire once, to a real SMTP sink and a local
webhook receiver, do not repeat while they hold, and resolve once; a dead-letter queue that grows
fires; waiting jobs and the outbox fire past their ages; one failing channel does not stop the
others; two checks at once announce a change once."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone
from pytest_django.fixtures import Settings

from app.alerts import (
    ETA_LOOKAHEAD,
    Measurements,
    Thresholds,
    Transition,
    alerts_check,
    conditions_evaluate,
    oldest_waiting,
)
from app.enqueue import job_enqueue
from app.history import Outcomes
from app.models import AlertState, JobRecord, JobStatus, OutboxMessage
from config.celery import app as celery_app
from tasks.maintenance import check_alerts
from tests import jobs
from tests.sentry import SentryStandIn
from tests.smtp import SmtpSink, smtp_sink
from tests.support import ROOT, Broker, database_url, free_port, running_worker, wait_for

ADMINS = [("Ops", "ops@example.com"), ("", "oncall@example.com")]


class WebhookReceiver(ThreadingHTTPServer):
    """A local HTTP server that keeps the JSON bodies POSTed to it and answers ``status``."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.status = 204
        super().__init__(("127.0.0.1", 0), self.Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/alerts"

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            server: WebhookReceiver = self.server  # type: ignore[assignment]
            body = self.rfile.read(int(self.headers["Content-Length"]))
            assert self.headers["Content-Type"] == "application/json"
            server.bodies.append(json.loads(body))
            self.send_response(server.status)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with smtp_sink() as sink:
        yield sink


@pytest.fixture
def alerting(settings: Settings, sink: SmtpSink, webhook: WebhookReceiver) -> None:
    """Alerts to the sink and the receiver, with the default thresholds but a smaller minimum."""
    for name, value in sink.settings().items():
        setattr(settings, name, value)
    settings.ADMINS = ADMINS
    settings.ALERTS_WEBHOOK_URL = webhook.url
    settings.OUTGOING_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    settings.ALERTS_WINDOW = 15 * 60
    settings.ALERTS_FAILURE_RATE = 5.0
    settings.ALERTS_MIN_JOBS = 20
    settings.ALERTS_DEAD_LETTER_GROWTH = 0
    settings.ALERTS_QUEUE_AGE = 10 * 60
    settings.ALERTS_OUTBOX_AGE = 5 * 60


def emails(sink: SmtpSink) -> list[EmailMessage]:
    return [message_from_bytes(m.data, policy=policy.default) for m in sink.messages]  # type: ignore[misc]


def records(task: str, *, ok: int, failed: int = 0, dead: int = 0, at: datetime) -> None:
    """Ended job records of ``task``, enqueued at ``at``."""
    statuses = [JobStatus.SUCCEEDED] * ok + [JobStatus.FAILED] * failed + [JobStatus.DEAD] * dead
    made = JobRecord.objects.bulk_create(
        JobRecord(task_name=task, queue="default", status=s, finished_at=at) for s in statuses
    )
    JobRecord.objects.filter(id__in=[r.id for r in made]).update(enqueued_at=at)


def keys(transitions: list[Transition]) -> set[tuple[str, str]]:
    return {(t.key, t.state) for t in transitions}


# --- Through the channels ------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.usefixtures("alerting")
def test_a_failure_rate_above_the_threshold_fires_once_and_resolves_once(
    broker: Broker, sink: SmtpSink, webhook: WebhookReceiver
) -> None:
    now = timezone.now()
    records("tasks.example.flaky", ok=36, failed=3, dead=1, at=now - timedelta(minutes=5))
    records("tasks.example.steady", ok=100, at=now - timedelta(minutes=5))  # 6 in 143 overall
    records("tasks.example.rare", ok=1, failed=2, at=now - timedelta(minutes=5))  # too few

    fired = alerts_check(now=now)
    assert keys(fired) == {("failure_rate:tasks.example.flaky", "firing")}
    [mail] = emails(sink)
    assert mail["Subject"].endswith(
        "Alert: tasks.example.flaky: 4 of 40 jobs failed or died (10%) among those enqueued in "
        "the last 15 min (alert above 5%)"
    )
    assert sink.messages[0].rcpt_tos == ["ops@example.com", "oncall@example.com"]
    body = mail.get_content().replace("\r\n", "\n")
    assert "Firing:\n- failure_rate:tasks.example.flaky (since " in body
    [hook] = webhook.bodies
    [alert] = hook["alerts"]
    assert alert["key"] == "failure_rate:tasks.example.flaky"
    assert alert["state"] == "firing"
    assert alert["figures"] == {"ended": 40, "failed": 4, "percent": 10.0}
    assert hook["text"].startswith("Alert: tasks.example.flaky: 4 of 40")

    for minute in (1, 2, 3):  # it holds: nothing more
        assert alerts_check(now=now + timedelta(minutes=minute)) == []
    assert (len(sink.messages), len(webhook.bodies)) == (1, 1)
    state = AlertState.objects.get(key="failure_rate:tasks.example.flaky")
    assert state.firing and state.since == now

    records("tasks.example.flaky", ok=60, at=now)  # 4 of 100: 4%
    resolved = alerts_check(now=now + timedelta(minutes=4))
    assert keys(resolved) == {("failure_rate:tasks.example.flaky", "resolved")}
    assert alerts_check(now=now + timedelta(minutes=5)) == []
    assert len(sink.messages) == len(webhook.bodies) == 2
    assert emails(sink)[1]["Subject"].endswith(
        "Resolved: tasks.example.flaky: 4 of 100 jobs failed or died (4%) among those enqueued "
        "in the last 15 min (alert above 5%)"
    )
    assert webhook.bodies[1]["alerts"][0]["state"] == "resolved"
    assert webhook.bodies[1]["alerts"][0]["since"] == now.isoformat()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("alerting")
def test_jobs_failing_on_a_worker_fire_the_rate_and_dead_letter_alerts_once_then_resolve(
    broker: Broker, sink: SmtpSink, webhook: WebhookReceiver, events: Path, tmp_path: Path
) -> None:
    """Real jobs: 18 succeed, 2 fail for good and are dead-lettered by RabbitMQ (10% failing).
    The periodic task itself, run by a worker of its queue, sends the alerts."""
    assert alerts_check() == []  # the dead-letter queues' depth so far: nothing grew
    worker_env = {
        **sink.env(),
        "DJANGO_ADMINS": "Ops <ops@example.com>",
        "ALERTS_WEBHOOK_URL": webhook.url,
        "OUTGOING_ALLOWED_NETWORKS": "127.0.0.1/32",
        "ALERTS_MIN_JOBS": "20",
    }
    with running_worker(queues_="default,email", log_dir=tmp_path, env=worker_env):
        with transaction.atomic():
            for _ in range(18):
                job_enqueue(jobs.tracked_record, args=(str(events),))
            for _ in range(2):
                job_enqueue(jobs.fails_until_file_exists, args=(str(tmp_path / "never"),))
        ended = JobRecord.objects.filter(status__in=[JobStatus.SUCCEEDED, JobStatus.DEAD])
        wait_for(lambda: ended.count() == 20, timeout=60, what="the 20 jobs to end")
        wait_for(lambda: broker.depth("default.dead") == 2, what="2 messages in default.dead")
        assert check_alerts.delay().id  # routed to the email queue
        wait_for(lambda: webhook.bodies and sink.messages, what="the alerts to go out")
    # Two failures of one task are too few to judge it alone (ALERTS_MIN_JOBS): only overall.
    fired = {(a["key"], a["state"]) for a in webhook.bodies[0]["alerts"]}
    assert fired == {("failure_rate", "firing"), ("dead_letters:default", "firing")}
    dead = next(a for a in webhook.bodies[0]["alerts"] if a["key"] == "dead_letters:default")
    assert dead["figures"]["depth"] == 2
    [mail] = emails(sink)
    assert mail["Subject"].endswith("(and 1 more)")
    body = mail.get_content().replace("\r\n", "\n")
    assert "All tasks: 2 of 20 jobs failed or died (10%)" in body
    assert "default.dead holds 2 messages, 2 more than at the previous check" in body

    now = AlertState.objects.get(key="failure_rate").since
    assert now is not None
    assert alerts_check(now=now + timedelta(minutes=1)) == []
    assert alerts_check(now=now + timedelta(minutes=14)) == []
    # A window later the failures have left it, and default.dead has not grown since.
    resolved = alerts_check(now=now + timedelta(minutes=16))
    assert keys(resolved) == {(key, "resolved") for key, _ in fired}
    assert alerts_check(now=now + timedelta(minutes=17)) == []
    assert len(sink.messages) == len(webhook.bodies) == 2
    assert "default.dead holds 2 messages, none new for 15 min" in emails(sink)[1].as_string()


@pytest.mark.django_db
@pytest.mark.usefixtures("alerting")
def test_a_dead_letter_queue_that_grows_fires_and_resolves_after_a_quiet_window(
    broker: Broker, webhook: WebhookReceiver
) -> None:
    """Dead-lettered by RabbitMQ itself: a message of the queue rejected without requeue, as a
    worker rejects a job that failed for good."""
    now = timezone.now()
    assert alerts_check(now=now) == []

    def dead_letter_one() -> None:
        jobs.record.apply_async(args=["/dev/null"], queue="images")  # no worker serves it here
        with broker.connection() as conn:
            channel: Any = conn.default_channel
            message = wait_for(lambda: channel.basic_get("images", no_ack=False), what="it")
            channel.basic_reject(message.delivery_tag, requeue=False)
        wait_for(lambda: broker.depth("images.dead") >= 1, what="the message in images.dead")

    dead_letter_one()
    [fired] = alerts_check(now=now + timedelta(minutes=1))
    assert (fired.key, fired.state) == ("dead_letters:images", "firing")
    assert fired.summary.startswith("images.dead holds 1 message, 1 more than at the previous")
    dead_letter_one()  # more while it fires: still the one alert
    assert alerts_check(now=now + timedelta(minutes=2)) == []
    assert alerts_check(now=now + timedelta(minutes=16)) == []  # 14 minutes quiet
    [resolved] = alerts_check(now=now + timedelta(minutes=17))
    assert (resolved.key, resolved.state) == ("dead_letters:images", "resolved")
    assert len(webhook.bodies) == 2
    assert broker.depth("images.dead") == 2  # the alert takes nothing off the queue


@pytest.mark.django_db
def test_a_job_waiting_too_long_and_an_old_outbox_row_fire_past_their_ages(
    broker: Broker, settings: Settings
) -> None:
    settings.ALERTS_QUEUE_AGE, settings.ALERTS_OUTBOX_AGE = 10 * 60, 5 * 60
    now = timezone.now()
    sent: list[Transition] = []

    def waiting(queue: str, minutes: int, eta_in: int | None = None) -> JobRecord:
        record = JobRecord.objects.create(task_name="tasks.exports.run", queue=queue)
        JobRecord.objects.filter(id=record.id).update(enqueued_at=now - timedelta(minutes=minutes))
        eta = (now + timedelta(minutes=eta_in)).isoformat() if eta_in is not None else None
        row = OutboxMessage.objects.create(
            task_id=record.id, task_name=record.task_name, options={"eta": eta}
        )
        OutboxMessage.objects.filter(id=row.id).update(sent_at=now)
        return record

    waiting("exports", 7)
    waiting("images", 30, eta_in=-3)  # enqueued for 3 minutes ago: waits since then
    waiting("api", 20, eta_in=2)  # not due yet
    pending = OutboxMessage.objects.create(task_id=uuid.uuid4(), task_name="tasks.example.add")
    OutboxMessage.objects.filter(id=pending.id).update(created_at=now - timedelta(minutes=4))
    assert alerts_check(now=now, notify=sent.extend) == []

    late = waiting("exports", 11)
    [fired] = alerts_check(now=now + timedelta(seconds=30), notify=sent.extend)
    assert (fired.key, fired.state) == ("queue_age:exports", "firing")
    assert fired.summary == (
        "the oldest job queued for exports has waited 11 min (alert above 10 min)"
    )
    [fired] = alerts_check(now=now + timedelta(minutes=1, seconds=1), notify=sent.extend)
    assert (fired.key, fired.state) == ("outbox", "firing")
    assert fired.summary.startswith("1 outbox row waiting to be published, the oldest for 5 min")
    assert fired.figures["pending"] == 1

    JobRecord.objects.filter(id=late.id).update(status=JobStatus.STARTED)
    OutboxMessage.objects.filter(id=pending.id).update(sent_at=now)
    resolved = alerts_check(now=now + timedelta(minutes=2), notify=sent.extend)
    assert keys(resolved) == {("queue_age:exports", "resolved"), ("outbox", "resolved")}
    assert len(sent) == 4


@pytest.mark.django_db
@pytest.mark.usefixtures("alerting")
def test_a_channel_that_fails_is_logged_and_the_others_still_go(
    broker: Broker,
    settings: Settings,
    sink: SmtpSink,
    webhook: WebhookReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = timezone.now()
    records("tasks.example.flaky", ok=18, failed=2, at=now)
    settings.EMAIL_PORT = free_port()  # nothing listens there
    caplog.set_level(logging.ERROR, logger="app.alerts")
    assert len(alerts_check(now=now)) == 2
    assert len(webhook.bodies) == 1
    assert "could not notify through email" in caplog.text

    settings.EMAIL_PORT = sink.port
    webhook.status = 500
    records("tasks.example.flaky", ok=20, at=now)
    assert len(alerts_check(now=now + timedelta(minutes=1))) == 2  # resolved
    assert len(sink.messages) == 1
    assert "could not notify through webhook" in caplog.text
    assert "500 Internal Server Error" in caplog.text


@pytest.mark.django_db
@pytest.mark.usefixtures("alerting")
def test_the_webhook_goes_through_the_url_guard(
    broker: Broker, settings: Settings, sink: SmtpSink, webhook: WebhookReceiver
) -> None:
    settings.OUTGOING_ALLOWED_NETWORKS = []  # the receiver is on loopback: refused
    now = timezone.now()
    records("tasks.example.flaky", ok=18, failed=2, at=now)
    assert len(alerts_check(now=now)) == 2
    assert webhook.bodies == []
    assert len(sink.messages) == 1


@pytest.mark.django_db
def test_a_condition_not_judged_for_a_day_is_forgotten(broker: Broker) -> None:
    """A task that stopped running leaves no line behind in ``manage.py alerts``."""
    now = timezone.now()
    records("tasks.example.gone", ok=20, at=now)
    assert alerts_check(now=now) == []
    assert AlertState.objects.filter(key="failure_rate:tasks.example.gone").exists()
    alerts_check(now=now + timedelta(hours=23))
    assert AlertState.objects.filter(key="failure_rate:tasks.example.gone").exists()
    alerts_check(now=now + timedelta(days=1, minutes=1))
    left = set(AlertState.objects.values_list("key", flat=True))
    assert "failure_rate:tasks.example.gone" not in left
    assert {"dead_letters:default", "queue_age:default", "outbox"} <= left


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("before", ["no state", "states"])
def test_two_checks_at_once_announce_a_change_once(
    broker: Broker, settings: Settings, before: str
) -> None:
    """The first check holds its rows (it is notifying) while the second starts: the second
    waits for it, then sees the alerts already firing. From existing states (rows locked), and
    from no state at all (both insert the same new rows)."""
    settings.ALERTS_MIN_JOBS = 20
    now = timezone.now()
    if before == "states":
        records("tasks.example.flaky", ok=20, at=now)
        assert alerts_check(now=now) == []
        assert AlertState.objects.filter(key="failure_rate:tasks.example.flaky").exists()
    records("tasks.example.flaky", ok=18, failed=4, at=now)
    first_notifying, release = threading.Event(), threading.Event()
    notified: list[list[Transition]] = []
    results: dict[str, list[Transition]] = {}

    def slow_notify(transitions: list[Transition]) -> None:
        notified.append(transitions)
        first_notifying.set()
        assert release.wait(20)

    def check(name: str) -> None:
        try:
            results[name] = alerts_check(now=now, notify=slow_notify)
        finally:
            connection.close()

    first = threading.Thread(target=check, args=("first",))
    first.start()
    assert first_notifying.wait(20)
    second = threading.Thread(target=check, args=("second",))
    second.start()
    second.join(1)
    assert second.is_alive()  # waiting for the first one's rows
    release.set()
    first.join(20)
    second.join(20)
    assert len(results["first"]) == 2
    assert results["second"] == []
    assert len(notified) == 1


@pytest.mark.django_db(transaction=True)
def test_manage_alerts_checks_notifies_sentry_and_lists_the_states(
    broker: Broker, sentry: SentryStandIn
) -> None:
    now = timezone.now()
    records("tasks.example.flaky", ok=18, failed=2, at=now)
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": celery_app.conf.broker_url,
        "SENTRY_DSN": sentry.dsn,
        "DJANGO_ADMINS": "",
        "ALERTS_WEBHOOK_URL": "",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "alerts", "--check"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "firing: failure_rate: All tasks: 2 of 20 jobs failed or died (10%)" in result.stdout
    assert "failure_rate:tasks.example.flaky" in result.stdout
    assert "FIRING since" in result.stdout
    assert "dead_letters:default" in result.stdout
    events = wait_for(
        lambda: [e for e in sentry.events() if e.get("message", "").startswith("firing: ")],
        what="the alerts to reach the Sentry stand-in",
    )
    assert {e["tags"]["alert"] for e in events} == {
        "failure_rate",
        "failure_rate:tasks.example.flaky",
    }
    assert {e["level"] for e in events} == {"warning"}
    flaky = next(e for e in events if e["tags"]["alert"] == "failure_rate:tasks.example.flaky")
    assert flaky["fingerprint"] == ["template-alert", "failure_rate:tasks.example.flaky", "firing"]
    assert flaky["contexts"]["alert"]["figures"] == {"ended": 20, "failed": 2, "percent": 10.0}


# --- Judging, without I/O ------------------------------------------------------------------------

THRESHOLDS = Thresholds(
    window=timedelta(minutes=15),
    failure_percent=5.0,
    min_jobs=20,
    dead_letter_growth=0,
    queue_age=timedelta(minutes=10),
    outbox_age=timedelta(minutes=5),
)
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def measured(at: datetime, **fields: Any) -> Measurements:
    values: dict[str, Any] = {"outcomes": {}, "dead_depths": {}, "oldest_waiting": {}, **fields}
    return Measurements(at=at, **values)


def judged(at: datetime, states: dict[str, AlertState], **fields: Any) -> dict[str, Any]:
    conditions = conditions_evaluate(
        measured=measured(at, **fields), thresholds=THRESHOLDS, previous=states
    )
    for c in conditions:  # as alerts_check stores them
        state = states.setdefault(c.key, AlertState(key=c.key, checked_at=at))
        state.firing, state.figures = c.firing, c.figures
    return {c.key: c.firing for c in conditions}


def test_dead_letter_growth_is_judged_against_the_previous_check_and_a_quiet_window() -> None:
    states: dict[str, AlertState] = {}
    assert judged(T0, states, dead_depths={"default": 5})["dead_letters:default"] is False
    assert judged(T0 + timedelta(minutes=1), states, dead_depths={"default": 6})[
        "dead_letters:default"
    ]
    # RabbitMQ unreadable: not judged, the state stays as it was.
    assert "dead_letters:default" not in judged(
        T0 + timedelta(minutes=2), states, dead_depths={"default": None}
    )
    assert states["dead_letters:default"].figures["depth"] == 6
    assert judged(T0 + timedelta(minutes=15), states, dead_depths={"default": 4})[
        "dead_letters:default"
    ]  # replayed some: no growth, but not yet a quiet window
    assert not judged(T0 + timedelta(minutes=16), states, dead_depths={"default": 4})[
        "dead_letters:default"
    ]


def test_growth_up_to_the_setting_is_tolerated() -> None:
    states: dict[str, AlertState] = {}
    tolerant = Thresholds(**{**THRESHOLDS.__dict__, "dead_letter_growth": 2})
    for minute, depth, firing in ((0, 0, False), (1, 2, False), (2, 5, True)):
        conditions = conditions_evaluate(
            measured=measured(T0 + timedelta(minutes=minute), dead_depths={"api": depth}),
            thresholds=tolerant,
            previous=states,
        )
        [c] = [c for c in conditions if c.key == "dead_letters:api"]
        assert c.firing is firing, (minute, c)
        states[c.key] = AlertState(key=c.key, checked_at=T0, firing=c.firing, figures=c.figures)


def test_a_task_with_too_few_ended_jobs_is_not_judged_and_a_firing_one_then_resolves() -> None:
    states: dict[str, AlertState] = {}
    few = {"tasks.a": Outcomes(ended=19, failed=19)}
    assert "failure_rate:tasks.a" not in judged(T0, states, outcomes=few)
    enough = {"tasks.a": Outcomes(ended=20, failed=2)}
    assert judged(T0, states, outcomes=enough)["failure_rate:tasks.a"] is True
    assert judged(T0, states, outcomes=few)["failure_rate:tasks.a"] is False
    exactly = {"tasks.a": Outcomes(ended=20, failed=1)}  # 5% is not above 5%
    assert judged(T0, states, outcomes=exactly)["failure_rate:tasks.a"] is False


@pytest.mark.django_db
def test_the_oldest_due_job_is_found_behind_any_number_of_jobs_enqueued_for_later() -> None:
    """Only the hundred oldest queued records were read: when all were reminders for tomorrow,
    the queue's age read 0 and a job stuck behind them for an hour never fired its alert."""
    now = timezone.now()
    tomorrow = (now + timedelta(days=1)).isoformat()
    records = [
        JobRecord(task_name="tests.jobs.record", queue="default", status=JobStatus.QUEUED)
        for _ in range(ETA_LOOKAHEAD * 3 + 1)
    ]
    JobRecord.objects.bulk_create(records)
    for n, record in enumerate(records):  # from 2 hours ago, a second apart
        record.enqueued_at = now - timedelta(hours=2) + timedelta(seconds=n)
    JobRecord.objects.bulk_update(records, ["enqueued_at"])
    *reminders, stuck = records
    OutboxMessage.objects.bulk_create(
        OutboxMessage(task_id=r.id, task_name=r.task_name, options={"eta": tomorrow}, sent_at=now)
        for r in reminders
    )
    assert oldest_waiting()["default"] == stuck.enqueued_at
    stuck.delete()
    assert oldest_waiting()["default"] > now  # none due: nobody waits yet
