"""A bulk send's batches in this process, against a real SMTP server: the paths a whole-stack
run rarely takes (an unsendable row, a refused sender, a cancel, a lost batch)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from app.errors import PermanentError
from app.models import JobRecord, JobStatus
from app.records import record_request_cancel, record_start
from tasks.email.bulk import batch_abandon, batch_send, bulk_start, bulks_sweep
from tasks.email.models import Bulk, BulkRecipient, RecipientState
from tests.smtp import SmtpSink
from tests.support import Broker

pytestmark = pytest.mark.django_db(transaction=True)


def started_bulk(recipients: list[str]) -> str:
    with transaction.atomic():
        bulk_id = bulk_start(template="notice", recipients=recipients, context={"title": "Hi"})
    record_start(
        job_id=bulk_id, task_name="tasks.email.bulk", queue="email_bulk", args=[], kwargs={},
        correlation_id="",
    )  # fmt: skip
    return bulk_id


def states() -> dict[str, str]:
    return dict(BulkRecipient.objects.values_list("address", "state"))


def test_a_recipient_whose_message_cannot_be_sent_is_rejected_and_the_batch_goes_on(
    broker: Broker, sink: SmtpSink
) -> None:
    """A row the checks never saw (written by other code, or before a check existed) used to
    stop its batch as a transient error, retried until everyone after it failed."""
    bulk_id = started_bulk(["one@example.com", "two@example.com"])
    BulkRecipient.objects.filter(address="one@example.com").update(
        address="x@example.com, y@example.com"
    )
    counts = batch_send(bulk_id=bulk_id, batch=0, final_attempt=False)
    assert (counts["sent"], counts["rejected"]) == (1, 1)
    assert states() == {"x@example.com, y@example.com": "rejected", "two@example.com": "sent"}
    assert sink.deliveries() == {"two@example.com": 1}
    assert JobRecord.objects.get(id=bulk_id).status == JobStatus.SUCCEEDED


def test_a_refused_sender_aborts_the_whole_send(broker: Broker, sink: SmtpSink) -> None:
    sink.refuse_sender = True
    bulk_id = started_bulk([f"user{i}@example.com" for i in range(5)])
    with pytest.raises(PermanentError, match="refused: 553"):
        batch_send(bulk_id=bulk_id, batch=0, final_attempt=False)
    assert set(states().values()) == {RecipientState.FAILED}
    record = JobRecord.objects.get(id=bulk_id)
    assert record.status == JobStatus.FAILED and "553" in record.error


def test_a_cancelled_bulk_stops_and_ends_cancelled(broker: Broker, sink: SmtpSink) -> None:
    bulk_id = started_bulk([f"user{i:03d}@example.com" for i in range(120)])
    assert record_request_cancel(job_id=bulk_id) == JobStatus.STARTED
    batch_send(bulk_id=bulk_id, batch=0, final_attempt=False)
    assert JobRecord.objects.get(id=bulk_id).status == JobStatus.CANCELLED
    sent = [a for a, state in states().items() if state == RecipientState.SENT]
    assert len(sent) < 120 and len(sink.messages) == len(sent)
    assert BulkRecipient.objects.filter(error="cancelled").count() == 120 - len(sent)


def test_a_batch_lost_for_good_still_ends_its_bulk(broker: Broker, sink: SmtpSink) -> None:
    bulk_id = started_bulk(["one@example.com", "two@example.com"])
    BulkRecipient.objects.filter(address="one@example.com").update(state=RecipientState.SENDING)
    batch_abandon(bulk_id=bulk_id, batch=0, error="WorkerLostError: ...")
    assert states() == {"one@example.com": "failed", "two@example.com": "failed"}
    record = JobRecord.objects.get(id=bulk_id)
    assert record.status == JobStatus.SUCCEEDED and record.result is not None
    assert (record.result["failed"], record.result["unknown"]) == (2, 1)


def test_bulks_no_batch_moved_for_a_day_are_ended(broker: Broker, sink: SmtpSink) -> None:
    stale, fresh = started_bulk(["a@example.com"]), started_bulk(["b@example.com"])
    day_ago = timezone.now() - timedelta(days=1, minutes=1)
    Bulk.objects.filter(id=stale).update(created_at=day_ago)
    BulkRecipient.objects.filter(bulk_id=stale).update(updated_at=day_ago)
    assert bulks_sweep(idle_since=timezone.now() - timedelta(days=1)) == 1
    assert Bulk.objects.get(id=stale).ended_at is not None
    assert Bulk.objects.get(id=fresh).ended_at is None
