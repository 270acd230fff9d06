"""Sending through an email service provider's API instead of SMTP, as the README's settings
do (django-anymail; its Postmark backend against a local stand-in that speaks Postmark's API):
what is retried, what refuses a recipient, what stops the send, once per message."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest
from anymail.exceptions import AnymailAPIError
from pytest_django.fixtures import Settings as SettingsWrapper

from app.errors import PermanentError, TransientError
from tasks.email.bulk import batch_send
from tasks.email.models import BulkRecipient
from tasks.email.services import email_deliver, smtp_outcome
from tests.email.postmark import FakePostmark, fake_postmark
from tests.email.test_bulk import started_bulk
from tests.support import Broker

pytestmark = pytest.mark.django_db(transaction=True)

SPEC = {"template": "notice", "to": ["ann@example.com"], "context": {"title": "Hi"}}


@pytest.fixture
def postmark(settings: SettingsWrapper) -> Iterator[FakePostmark]:
    with fake_postmark() as fake:
        for name, value in fake.settings().items():
            setattr(settings, name, value)
        yield fake


def test_a_message_goes_through_the_provider(postmark: FakePostmark) -> None:
    assert email_deliver(job_id=str(uuid.uuid4()), spec=SPEC)["sent"] is True
    (taken,) = postmark.taken
    assert (taken["To"], taken["Subject"]) == ("ann@example.com", "Hi")


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, {"ErrorCode": 100, "Message": "Maintenance"}),
        (429, {"ErrorCode": 429, "Message": "Rate limit exceeded"}),
    ],
)
def test_a_5xx_or_429_is_retried_and_the_retry_sends_once(
    postmark: FakePostmark, status: int, body: dict[str, object]
) -> None:
    job_id = str(uuid.uuid4())
    postmark.script.append((status, body))
    with pytest.raises(TransientError, match=str(status)):
        email_deliver(job_id=job_id, spec=SPEC)
    email_deliver(job_id=job_id, spec=SPEC)  # the retry: the claim was given back
    assert len(postmark.taken) == 1


def test_a_refused_api_key_stops_the_send_for_good_and_is_logged(
    postmark: FakePostmark, settings: SettingsWrapper, caplog: pytest.LogCaptureFixture
) -> None:
    """It was an OSError to the classification (requests' HTTPError), retried for 17 minutes."""
    settings.ANYMAIL = postmark.settings(token="revoked")["ANYMAIL"]  # noqa: S106
    with (
        caplog.at_level(logging.ERROR),
        pytest.raises(PermanentError, match="not sent: the provider refused the credentials"),
    ):
        email_deliver(job_id=str(uuid.uuid4()), spec=SPEC)
    assert "email not sent: the provider refused the credentials" in caplog.text
    assert postmark.taken == []


def test_an_address_the_provider_refuses_is_refused_for_good(postmark: FakePostmark) -> None:
    invalid = "Invalid 'To' address: 'ann@example.com'."  # as Postmark words it
    postmark.script.append((422, {"ErrorCode": 300, "Message": invalid}))
    with pytest.raises(PermanentError, match="not sent: "):
        email_deliver(job_id=str(uuid.uuid4()), spec=SPEC)
    assert postmark.taken == []


def test_a_bulk_batch_refuses_one_recipient_and_retries_after_a_5xx_sending_each_once(
    broker: Broker, postmark: FakePostmark
) -> None:
    addresses = [f"user{i}@example.com" for i in range(5)]
    bulk_id = started_bulk(addresses)
    postmark.script += [
        None,
        (422, {"ErrorCode": 300, "Message": "Invalid 'To' address: 'user1@example.com'."}),
        (503, {"ErrorCode": 100, "Message": "Maintenance"}),
    ]
    with pytest.raises(TransientError):
        batch_send(bulk_id=bulk_id, batch=0, final_attempt=False)
    counts = batch_send(bulk_id=bulk_id, batch=0, final_attempt=False)  # the retry
    assert counts["sent"] == 3
    states = dict(BulkRecipient.objects.values_list("address", "state"))
    assert states == {a: "rejected" if a == "user1@example.com" else "sent" for a in addresses}
    assert sorted(message["To"] for message in postmark.taken) == sorted(
        a for a in addresses if a != "user1@example.com"
    )


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("Throttling", 400, "transient"),  # SES v1 throttles with a 400
        ("TooManyRequestsException", 429, "transient"),
        ("InternalFailure", 500, "transient"),
        ("MessageRejected", 400, "rejected"),
        ("AccessDeniedException", 403, "abort"),
    ],
)
def test_amazon_ses_errors_as_anymail_raises_them(code: str, status: int, kind: str) -> None:
    """Anymail's SES backend raises boto's error response as it is (its status is not an
    attribute). Every one of them was a permanent "invalid": a throttling refused every
    recipient of a bulk send for good."""
    response = {"Error": {"Code": code, "Message": "..."}, "ResponseMetadata": {
        "HTTPStatusCode": status}}  # fmt: skip
    assert smtp_outcome(AnymailAPIError(f"An error occurred ({code})", response=response)).kind == (
        kind
    )
