"""The family's plain functions, without a broker: validation of outside input (with generated
values), the request Twilio gets, and how each answer (or no answer) is recorded."""

from __future__ import annotations

import base64
import string
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from django.db import transaction
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pytest_django.fixtures import Settings

from app.models import EffectClaim, OutboxMessage
from tasks.notifications import conf
from tasks.notifications.models import Notification, NotificationStatus
from tasks.notifications.providers import (
    ProviderOutcomeUnknown,
    ProviderRejected,
    ProviderUnavailable,
    twilio_answer_read,
    twilio_request_build,
)
from tasks.notifications.services import (
    E164,
    SMS_BODY_MAX,
    NotificationInvalid,
    notification_deliver,
    notification_send,
    notification_validate,
)
from tests.notifications.twilio import ACCOUNT_SID, AUTH_TOKEN, SENDER, Answer, FakeTwilio
from tests.support import free_port

TWILIO = conf.TwilioSettings(
    account_sid=ACCOUNT_SID,
    auth_token=AUTH_TOKEN,
    sender=SENDER,
    messaging_service_sid="",
    api_base="https://api.twilio.example",
)


# --- Validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"channel": "fax"}, "channel: must be one of ['push', 'sms'], got 'fax'"),
        ({"to": "4155550100"}, "to: must be a phone number in E.164 form"),
        ({"to": "+1 415 555 0100"}, "to: must be a phone number in E.164 form"),
        ({"to": "+0415550100"}, "to: must be a phone number in E.164 form"),
        ({"to": "+1415555010012345"}, "to: must be a phone number in E.164 form"),
        ({"to": "+14155550100\n"}, "to: must be a phone number in E.164 form"),
        (
            {"to": "+\u0661\u0664\u0661\u0665\u0665\u0665\u0660\u0661\u0660\u0660"},
            "to: must be a phone number in E.164 form",
        ),  # Arabic digits
        ({"body": ""}, "body: must not be empty"),
        ({"body": " \n"}, "body: must not be empty"),
        ({"body": "x" * (SMS_BODY_MAX + 1)}, "body: must be at most 1600 characters, got 1601"),
        ({"body": "a\x00b"}, "body: must not contain control character U+0000 (at 1)"),
        ({"body": "bell\x07"}, "body: must not contain control character U+0007 (at 4)"),
        ({"body": "\ud800"}, "body: is not valid Unicode (lone surrogate at 0)"),
        ({"body": b"bytes"}, "body: must be text, not bytes"),
        ({"title": "Hi"}, "title: SMS have none"),
        ({"channel": "push", "to": "tok en"}, "to: must be a device token"),
        ({"channel": "push", "to": "tok", "title": "a\nb"}, "title: must not contain control"),
        ({"channel": "push", "to": "tok", "data": ["x"]}, "data: must be an object of text"),
        ({"channel": "push", "to": "tok", "data": {"n": 1}}, "data['n']: must be text, not int"),
        ({"channel": "push", "to": "tok", "data": {"k": "v" * 2000}}, "data: must be at most"),
    ],
)
def test_bad_input_is_refused_with_the_field_and_the_problem(
    fields: dict[str, Any], message: str
) -> None:
    given_fields = {"channel": "sms", "to": "+14155550100", "body": "Hello", **fields}
    with pytest.raises(NotificationInvalid) as refused:
        notification_validate(**given_fields)
    assert str(refused.value).startswith(message)


@pytest.mark.django_db
def test_invalid_input_records_and_enqueues_nothing() -> None:
    with pytest.raises(NotificationInvalid):
        notification_send(channel="sms", to="+14155550100", body="bad\x1b[31m")
    assert not Notification.objects.exists()
    assert not OutboxMessage.objects.exists()


@pytest.mark.django_db
def test_a_valid_notification_is_recorded_with_its_job_in_the_callers_transaction() -> None:
    with transaction.atomic():
        job_id = notification_send(channel="sms", to="+14155550100", body="Hi")
        notification = Notification.objects.get()
        assert (notification.job_id, notification.status) == (job_id, NotificationStatus.QUEUED)
        assert OutboxMessage.objects.get(task_id=job_id).kwargs == {
            "notification_id": notification.id
        }


anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.binary(max_size=20),
    st.text(max_size=50),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.one_of(st.text(max_size=5), st.integers()), max_size=3),
)
phone_like = st.text(alphabet="+0123456789 -()\n\u0661", max_size=20)  # and an Arabic 1


@given(
    channel=st.one_of(st.sampled_from(["sms", "push"]), anything),
    to=st.one_of(phone_like, st.from_regex(E164, fullmatch=True), anything),
    body=st.one_of(st.text(max_size=2000), anything),
    title=st.one_of(st.none(), st.text(max_size=300), anything),
    data=st.one_of(st.none(), anything),
)
def test_outside_input_is_accepted_or_refused_clearly_never_a_crash(
    channel: Any, to: Any, body: Any, title: Any, data: Any
) -> None:
    try:
        notification_validate(channel=channel, to=to, body=body, title=title, data=data)
    except NotificationInvalid as exc:
        assert exc.field and str(exc).startswith(exc.field)


sms_text = st.text(
    alphabet=st.one_of(st.characters(exclude_categories=("Cc", "Cs")), st.sampled_from("\n\t")),
    min_size=1,
    max_size=SMS_BODY_MAX,
).filter(str.strip)


@given(to=st.from_regex(E164, fullmatch=True), body=sms_text)
def test_valid_sms_become_the_request_twilio_expects(to: str, body: str) -> None:
    notification_validate(channel="sms", to=to, body=body)
    with httpx.Client(timeout=1) as client:
        request = twilio_request_build(client=client, settings=TWILIO, to=to, body=body)
    assert request.method == "POST"
    assert str(request.url) == (
        f"https://api.twilio.example/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    )
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    credentials = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {credentials}"
    assert request.extensions["timeout"]["read"] == 1  # bounded waits
    form = parse_qs(request.read().decode(), keep_blank_values=True, strict_parsing=True)
    assert form == {"To": [to], "Body": [body], "From": [SENDER]}


@pytest.mark.django_db
@hsettings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    to=st.text(alphabet=string.ascii_letters + string.digits + ":_-.", min_size=1, max_size=300),
    body=sms_text,
    title=st.one_of(st.none(), st.text(max_size=200)),
    data=st.one_of(
        st.none(), st.dictionaries(st.text(max_size=20), st.text(max_size=50), max_size=5)
    ),
)
def test_whatever_validation_accepts_the_database_stores(
    to: str, body: str, title: str | None, data: dict[str, str] | None
) -> None:
    """PostgreSQL refuses NUL in text and jsonb: validation must refuse it first, not a 500."""
    try:
        notification_validate(channel="push", to=to, body=body, title=title, data=data)
    except NotificationInvalid:
        return
    with transaction.atomic():
        row = Notification.objects.create(
            channel="push", to=to, body=body, title=title or "", data=data
        )
        row.refresh_from_db()
        assert (row.to, row.body, row.data) == (to, body, data)
        transaction.set_rollback(True)


def test_messaging_service_is_sent_instead_of_from() -> None:
    with_service = conf.TwilioSettings(
        **{**TWILIO.__dict__, "messaging_service_sid": "MG" + "1" * 32}
    )
    with httpx.Client() as client:
        request = twilio_request_build(
            client=client, settings=with_service, to="+33612345678", body="x"
        )
    form = parse_qs(request.read().decode())
    assert form["MessagingServiceSid"] == ["MG" + "1" * 32] and "From" not in form


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": "99999"}, conf.RETRY_AFTER_MAX),  # capped where it is read
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a date long past
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_a_429_carries_twilios_retry_after_capped(
    header: dict[str, str], seconds: float | None
) -> None:
    """The header is read by the engine's parser (tests/test_retry_after.py has its cases)."""
    response = httpx.Response(429, json={"code": 20429, "message": "Too Many"}, headers=header)
    with pytest.raises(ProviderUnavailable) as raised:
        twilio_answer_read(response=response)
    assert raised.value.retry_after == seconds


@pytest.mark.parametrize(
    ("asked", "kept"),
    [(30.0, 30.0), (-4.0, 0.0), (1e12, conf.RETRY_AFTER_MAX), (float("nan"), None), (None, None)],
)
def test_any_providers_retry_after_is_held_to_the_cap(
    asked: float | None, kept: float | None
) -> None:
    """A provider class of the user's may pass any number: the job never waits past the cap."""
    assert ProviderUnavailable("busy", retry_after=asked).retry_after == kept


# --- Delivery, in this process, against the local server ------------------------------------------


@pytest.fixture
def pointed_at(settings: Settings, twilio: FakeTwilio) -> FakeTwilio:
    settings.TWILIO_ACCOUNT_SID = ACCOUNT_SID
    settings.TWILIO_AUTH_TOKEN = AUTH_TOKEN
    settings.TWILIO_FROM = SENDER
    settings.TWILIO_API_BASE = twilio.url
    settings.NOTIFICATIONS_PROVIDERS = {}
    settings.NOTIFICATIONS_HTTP_TIMEOUT = 1
    return twilio


def queued_sms() -> Notification:
    return Notification.objects.create(channel="sms", to="+14155550100", body="Hi")


def claims() -> list[str]:
    return list(EffectClaim.objects.values_list("key", flat=True))


@pytest.mark.django_db(transaction=True)
def test_no_answer_in_time_is_recorded_unknown_and_never_sent_again(pointed_at: FakeTwilio) -> None:
    pointed_at.answer(Answer(201, {"sid": "SMlate"}, delay=3))
    notification = queued_sms()
    with pytest.raises(ProviderOutcomeUnknown, match="ReadTimeout"):
        notification_deliver(notification_id=notification.id)
    notification.refresh_from_db()
    assert notification.status == NotificationStatus.UNKNOWN
    assert claims() == [f"notifications:send:{notification.id}"]
    with pytest.raises(Exception, match="may have been sent already"):
        notification_deliver(notification_id=notification.id)
    assert len(pointed_at.received) == 1


@pytest.mark.django_db(transaction=True)
def test_no_connection_gives_the_claim_back_for_a_retry(
    pointed_at: FakeTwilio, settings: Settings
) -> None:
    settings.TWILIO_API_BASE = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    notification = queued_sms()
    with pytest.raises(ProviderUnavailable, match="Twilio unreachable: ConnectError"):
        notification_deliver(notification_id=notification.id)
    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == (NotificationStatus.RETRYING, 1)
    assert claims() == []
    settings.TWILIO_API_BASE = pointed_at.url
    assert notification_deliver(notification_id=notification.id)["status"] == "sent"
    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == (NotificationStatus.SENT, 2)
    assert notification.provider_message_id == pointed_at.received[0].sid


@pytest.mark.django_db(transaction=True)
def test_wrong_credentials_are_final(pointed_at: FakeTwilio, settings: Settings) -> None:
    settings.TWILIO_AUTH_TOKEN = "not-the-token"  # noqa: S105 (a wrong one, on purpose)
    notification = queued_sms()
    with pytest.raises(ProviderRejected, match="Twilio 401: 20003 Authenticate"):
        notification_deliver(notification_id=notification.id)
    notification.refresh_from_db()
    assert notification.status == NotificationStatus.FAILED


@pytest.mark.django_db(transaction=True)
def test_a_provider_that_cannot_be_loaded_fails_the_notification_clearly(
    settings: Settings,
) -> None:
    settings.NOTIFICATIONS_PROVIDERS = {"sms": "tasks.notifications.providers.NoSuchProvider"}
    notification = queued_sms()
    with pytest.raises(Exception, match="NoSuchProvider"):
        notification_deliver(notification_id=notification.id)
    notification.refresh_from_db()
    assert notification.status == NotificationStatus.FAILED
    assert "NoSuchProvider" in notification.error
    assert claims() == []


@pytest.mark.django_db
@pytest.mark.usefixtures("development_http")
def test_notifications_are_listed_in_the_admin_read_only(admin_client: Any) -> None:
    Notification.objects.create(
        channel="sms", to="+14155550100", body="Hi", status="failed", error="Twilio 400: 21211 x"
    )
    listing = admin_client.get("/admin/notifications/notification/?status__exact=failed")
    assert listing.status_code == 200
    assert b"+14155550100" in listing.content
    assert admin_client.get("/admin/notifications/notification/add/").status_code == 403
