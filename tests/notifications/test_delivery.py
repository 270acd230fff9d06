"""SMS and push through a real worker, with a local server standing in for Twilio: what reaches
it, what is retried, what is final, and that nothing is ever sent twice."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.db import transaction

from app.enqueue import job_enqueue
from app.models import EffectClaim, JobRecord, JobStatus
from tasks.notifications.models import Notification, NotificationStatus
from tasks.notifications.services import DELIVER_TASK, notification_send
from tests.notifications.twilio import SENDER, Answer, FakeTwilio, twilio_error
from tests.support import Broker, running_worker, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

TO = "+14155550100"


def worker(tmp_path: Path, env: dict[str, str]):  # type: ignore[no-untyped-def]
    return running_worker(queues_="email", pool="threads", concurrency=2, log_dir=tmp_path, env=env)


def job_ended(job_id: str, timeout: float = 30) -> JobRecord:
    """The job's record once it has ended (succeeded, failed, dead)."""
    return wait_for(
        lambda: JobRecord.objects.filter(
            id=job_id, status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.DEAD]
        ).first(),
        timeout=timeout,
        what=f"job {job_id} to end",
    )


def sms_send(body: str = "Your code is 123456") -> str:
    with transaction.atomic():  # as a view would: the job is published after commit
        return notification_send(channel="sms", to=TO, body=body)


def test_an_sms_reaches_twilio_with_the_right_fields(
    broker: Broker, twilio: FakeTwilio, tmp_path: Path
) -> None:
    with worker(tmp_path, twilio.env()):
        job_id = sms_send("Your code is 123456.\nIt expires in 10 minutes: ünïcødé ✓")
        record = job_ended(job_id)
    assert record.status == JobStatus.SUCCEEDED, record.error
    [received] = twilio.received
    assert received.authorized
    assert received.form == {
        "To": TO,
        "From": SENDER,
        "Body": "Your code is 123456.\nIt expires in 10 minutes: ünïcødé ✓",
    }
    notification = Notification.objects.get(job_id=job_id)
    assert (notification.status, notification.provider_message_id) == ("sent", received.sid)
    assert notification.provider == "tasks.notifications.providers.TwilioSms"
    assert record.result == {
        "notification_id": notification.id,
        "status": "sent",
        "provider_message_id": received.sid,
    }


def test_a_5xx_is_retried_and_the_sms_is_sent_once(
    broker: Broker, twilio: FakeTwilio, tmp_path: Path
) -> None:
    twilio.answer(twilio_error(500, 20500, "Internal Server Error"))
    with worker(tmp_path, twilio.env()):
        job_id = sms_send()
        record = job_ended(job_id)
    assert record.status == JobStatus.SUCCEEDED, record.error
    assert [r.status for r in twilio.received] == [500, 201]
    notification = Notification.objects.get(job_id=job_id)
    assert notification.status == NotificationStatus.SENT
    assert notification.attempts == 2
    assert notification.provider_message_id == twilio.received[1].sid
    assert record.attempts == 2


def test_a_twilio_error_is_permanent_recorded_and_not_retried(
    broker: Broker, twilio: FakeTwilio, tmp_path: Path
) -> None:
    twilio.answer(
        twilio_error(400, 21211, "The 'To' number +14155550100 is not a valid phone number.")
    )
    with worker(tmp_path, twilio.env()):
        job_id = sms_send()
        record = job_ended(job_id)
        time.sleep(1.5)  # a retry, if there were one, would come within a second
    assert record.status == JobStatus.DEAD
    assert "21211 The 'To' number" in record.error
    assert len(twilio.received) == 1
    notification = Notification.objects.get(job_id=job_id)
    assert notification.status == NotificationStatus.FAILED
    assert notification.error == (
        "Twilio 400: 21211 The 'To' number +14155550100 is not a valid phone number."
    )
    assert notification.provider_message_id == ""
    assert broker.depth("email.dead") == 1
    # Nothing was sent, so the claim was given back: a replay after a fix may send it.
    assert not EffectClaim.objects.filter(key__startswith="notifications:").exists()


def test_a_429_is_retried_after_its_retry_after(
    broker: Broker, twilio: FakeTwilio, tmp_path: Path
) -> None:
    twilio.answer(
        Answer(
            429,
            {"code": 20429, "message": "Too Many Requests", "status": 429},
            headers={"Retry-After": "3"},
        )
    )
    with worker(tmp_path, twilio.env()):
        job_id = sms_send()
        record = job_ended(job_id)
    assert record.status == JobStatus.SUCCEEDED, record.error
    first, second = twilio.received
    assert (first.status, second.status) == (429, 201)
    # The job's own first backoff is at most 1 s: the 3 s wait is Twilio's.
    assert second.at - first.at >= 2.9


def test_a_job_run_again_after_the_sms_was_sent_sends_nothing(
    broker: Broker, twilio: FakeTwilio, tmp_path: Path
) -> None:
    with worker(tmp_path, twilio.env()):
        job_id = sms_send()
        assert job_ended(job_id).status == JobStatus.SUCCEEDED
        notification = Notification.objects.get(job_id=job_id)
        # A second message for the same notification: a duplicate publish, a mistaken replay.
        with transaction.atomic():
            again = job_enqueue(DELIVER_TASK, kwargs={"notification_id": notification.id})
        record = job_ended(again)
    assert record.status == JobStatus.SUCCEEDED and record.result is not None
    assert record.result["provider_message_id"] == notification.provider_message_id
    assert len(twilio.received) == 1


def test_a_worker_killed_mid_send_never_sends_twice(
    broker: Broker, twilio: FakeTwilio, tmp_path: Path
) -> None:
    """At most once: the claim was taken before the call, so the run after the crash cannot
    know whether Twilio got the message, sends nothing, and says so."""
    twilio.answer(Answer(201, {"sid": "SMnever-seen", "status": "queued"}, delay=30))
    with worker(tmp_path, twilio.env()) as first:
        job_id = sms_send()
        wait_for(lambda: twilio.received, what="the request to reach Twilio")
        first.kill()
    assert Notification.objects.get(job_id=job_id).status == NotificationStatus.SENDING
    with worker(tmp_path, twilio.env()):
        record = job_ended(job_id)
    assert record.status == JobStatus.DEAD
    assert len(twilio.received) == 1
    notification = Notification.objects.get(job_id=job_id)
    assert notification.status == NotificationStatus.UNKNOWN
    assert "not sent again" in notification.error


def test_the_console_provider_logs_sms_and_push_without_credentials(
    broker: Broker, twilio: FakeTwilio, tmp_path: Path
) -> None:
    env = {**twilio.env(), "TWILIO_ACCOUNT_SID": "", "TWILIO_AUTH_TOKEN": ""}
    with worker(tmp_path, env) as running:
        sms = sms_send("hello from the console")
        with transaction.atomic():
            push = notification_send(
                channel="push",
                to="fcm-token:APA91bH_example-1",
                body="You have a new message",
                title="Inbox",
                data={"thread": "42"},
            )
        records = [job_ended(sms), job_ended(push)]
        output = running.output()
    assert [r.status for r in records] == [JobStatus.SUCCEEDED, JobStatus.SUCCEEDED]
    assert twilio.received == []
    for job_id in (sms, push):
        notification = Notification.objects.get(job_id=job_id)
        assert notification.status == NotificationStatus.SENT
        assert notification.provider == "tasks.notifications.providers.Console"
        assert notification.provider_message_id.startswith("console-")
        assert notification.provider_message_id in output
    assert "hello from the console" in output and "'thread': '42'" in output
