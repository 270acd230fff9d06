"""The webhooks family's logic in this process, against a real local receiver: what is sent,
what is logged, how each kind of answer is classified. The worker's side is in test_delivery.py."""

from __future__ import annotations

import email.utils
import gzip
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.test import Client, override_settings
from standardwebhooks.webhooks import Webhook

from app.enqueue import job_enqueue
from app.models import JobRecord, OutboxMessage
from tasks.webhooks import conf
from tasks.webhooks.models import Delivery, DeliveryStatus, Endpoint
from tasks.webhooks.services import (
    DeliveryNotRetryable,
    MessageIdInvalid,
    delivery_attempt,
    delivery_retry,
    endpoint_create,
    webhook_send,
)
from tasks.webhooks.signing import secret_generate
from tests.dripping import dripping
from tests.support import free_port
from tests.webhooks.receiver import Receiver, receiving

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def local_receivers() -> Iterator[None]:
    """The receivers listen on 127.0.0.1, which the URL guard lets through only when told."""
    with override_settings(OUTGOING_ALLOWED_NETWORKS=["127.0.0.1/32"]):
        yield


def sent(receiver: Receiver, *, event_type: str = "invoice.paid", **kwargs: object) -> Delivery:
    """Send an event to a new endpoint at ``receiver`` and make one attempt."""
    endpoint = endpoint_create(url=receiver.url, **kwargs)  # type: ignore[arg-type]
    with transaction.atomic():
        webhook_send(event_type=event_type, payload={"invoice": 7}, endpoints=[endpoint])
    delivery = Delivery.objects.get(endpoint=endpoint)
    delivery_attempt(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    return delivery


def test_send_creates_one_delivery_per_subscribed_active_endpoint_and_enqueues_its_job() -> None:
    url = "http://127.0.0.1:9/hooks"
    every = endpoint_create(url=url)
    invoices = endpoint_create(url=url, event_types=["invoice.*"])
    endpoint_create(url=url, event_types=["user.created"])
    off = endpoint_create(url=url)
    Endpoint.objects.filter(pk=off.pk).update(active=False)

    with transaction.atomic():
        job_ids = webhook_send(event_type="invoice.paid", payload={"id": 7}, msg_id="msg_inv7")
    deliveries = Delivery.objects.order_by("endpoint_id")
    assert [d.endpoint_id for d in deliveries] == [every.pk, invoices.pk]
    assert {d.msg_id for d in deliveries} == {"msg_inv7"}
    assert deliveries[0].payload["type"] == "invoice.paid"
    assert deliveries[0].payload["data"] == {"id": 7}
    assert sorted(job_ids) == sorted(d.job_id for d in deliveries)
    outbox = OutboxMessage.objects.filter(task_id__in=job_ids)
    assert {(m.task_name, m.args[0]) for m in outbox} == {
        ("tasks.webhooks.deliver", d.pk) for d in deliveries
    }
    # The same message id again: nothing new for endpoints that have it.
    with transaction.atomic():
        assert webhook_send(event_type="invoice.paid", payload={"id": 7}, msg_id="msg_inv7") == []


@pytest.mark.parametrize(
    "msg_id", ["", "m" * 101, "m\r\nX-Evil: 1", "msg id", "msg/1", "msg_é", "msg\x00"]
)
def test_a_message_id_that_cannot_be_a_header_is_refused_at_send(msg_id: str) -> None:
    """It goes in the webhook-id header and a 100-character column: checked before anything is
    written, in the caller's transaction, which stays usable."""
    endpoint_create(url="http://127.0.0.1:9/hooks")
    with transaction.atomic():
        with pytest.raises(MessageIdInvalid, match="msg_id must be 1 to 100 characters"):
            webhook_send(event_type="invoice.paid", payload={}, msg_id=msg_id)
        assert Endpoint.objects.count() == 1  # the transaction is not broken
    assert not Delivery.objects.exists()
    assert issubclass(MessageIdInvalid, ValueError)


def test_message_ids_of_every_allowed_character_are_taken() -> None:
    endpoint_create(url="http://127.0.0.1:9/hooks")
    for msg_id in ("m", "m" * 100, "evt_2024-01-01T00:00:00.000Z", "A.b:c-d_e"):
        with transaction.atomic():
            assert len(webhook_send(event_type="invoice.paid", payload={}, msg_id=msg_id)) == 1


def test_a_stored_message_id_that_is_no_valid_header_fails_without_retries() -> None:
    """Rows written before msg_id was checked: the request cannot be made, so no retry helps."""
    with receiving() as receiver:
        endpoint = endpoint_create(url=receiver.url)
        delivery = Delivery.objects.create(
            msg_id="m\r\nX-Evil: 1", endpoint=endpoint, event_type="a.b", payload={}
        )
        outcome = delivery_attempt(delivery_id=delivery.pk)
    assert receiver.received == []
    assert (outcome.status, outcome.retry) == (DeliveryStatus.FAILED, False)
    assert outcome.error.startswith("LocalProtocolError")


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks as PostgreSQL takes them")
def test_two_sends_of_one_message_at_once_leave_the_callers_transactions_whole() -> None:
    """The second insert waits for the first transaction, then hits the unique constraint: it
    is a savepoint's error, not the caller's, and the second send sends nothing."""
    endpoint_create(url="http://127.0.0.1:9/hooks")
    inserted, first = threading.Event(), []

    def send_and_hold() -> None:
        try:
            with transaction.atomic():
                first.extend(webhook_send(event_type="a.b", payload={}, msg_id="msg_once"))
                inserted.set()
                time.sleep(1)  # the other send is waiting on this row now
        finally:
            inserted.set()
            connection.close()

    thread = threading.Thread(target=send_and_hold)
    thread.start()
    assert inserted.wait(10)
    with transaction.atomic():
        second = webhook_send(event_type="a.b", payload={}, msg_id="msg_once")
        assert Delivery.objects.filter(msg_id="msg_once").count() == 1  # still usable
    thread.join()
    assert (len(first), second) == (1, [])
    assert OutboxMessage.objects.count() == 1


def test_a_send_rolled_back_with_its_event_leaves_nothing() -> None:
    endpoint_create(url="http://127.0.0.1:9/hooks")
    with pytest.raises(RuntimeError), transaction.atomic():
        webhook_send(event_type="invoice.paid", payload={})
        raise RuntimeError("the event's own transaction fails")
    assert not Delivery.objects.exists()
    assert not OutboxMessage.objects.exists()


def test_a_payload_that_is_not_json_is_refused_at_send() -> None:
    endpoint_create(url="http://127.0.0.1:9/hooks")
    with pytest.raises(TypeError):
        webhook_send(event_type="invoice.paid", payload={"when": datetime.now(UTC)})
    with pytest.raises(ValueError, match="Out of range float"):
        webhook_send(event_type="invoice.paid", payload={"amount": float("nan")})
    assert not Delivery.objects.exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://10.0.0.1/hooks", "10.0.0.1 is a private address"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata address"),
        ("http://[::ffff:10.0.0.1]/", "leads to 10.0.0.1, a private address"),
        ("ftp://127.0.0.1/hooks", "ftp is not allowed, only http and https"),
    ],
)
def test_an_unsafe_url_is_refused_when_an_endpoint_is_saved(url: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        endpoint_create(url=url)
    assert not Endpoint.objects.exists()


def test_a_delivered_webhook_is_signed_logged_and_not_sent_again() -> None:
    new, old = secret_generate(), secret_generate()
    with receiving() as receiver:
        delivery = sent(receiver, secrets=[new, old])
        delivery_attempt(delivery_id=delivery.pk)  # a redelivered job message
    assert delivery.status == DeliveryStatus.DELIVERED
    assert delivery.ended_at is not None
    [request] = receiver.received
    assert request.headers["webhook-id"] == delivery.msg_id
    assert request.headers["content-type"] == "application/json"
    for secret in (new, old):
        body = Webhook(secret).verify(request.body, request.headers)
        assert body["type"] == "invoice.paid"
        assert body["data"] == {"invoice": 7}
    [attempt] = delivery.attempts.all()
    assert (attempt.number, attempt.status_code, attempt.error) == (1, 200, "")
    assert attempt.latency_ms is not None
    assert attempt.response == '{"ok": true}'


def test_a_redirect_is_a_failure_and_is_not_followed() -> None:
    with receiving() as target, receiving((302, {"Location": target.url})) as receiver:
        delivery = sent(receiver)
    assert delivery.status == DeliveryStatus.FAILED
    assert f"HTTP 302 redirect to {target.url}" in delivery.error
    assert target.received == []


def test_a_410_disables_the_endpoint_and_its_other_deliveries_are_not_sent() -> None:
    with receiving((410, {})) as receiver:
        delivery = sent(receiver)
        endpoint = Endpoint.objects.get()
        assert (endpoint.active, delivery.status) == (False, DeliveryStatus.DISABLED)
        assert endpoint.disabled_reason == f"answered 410 Gone to {delivery.msg_id}"
        assert endpoint.disabled_at is not None
        # One that was pending when the endpoint went: ended without a request.
        pending = Delivery.objects.create(
            msg_id="msg_later", endpoint=endpoint, event_type="invoice.paid", payload={}
        )
        outcome = delivery_attempt(delivery_id=pending.pk)
        # And a new event no longer goes to it.
        with transaction.atomic():
            assert webhook_send(event_type="invoice.paid", payload={}) == []
    assert len(receiver.received) == 1
    assert outcome.status == DeliveryStatus.DISABLED
    assert "is disabled: answered 410 Gone" in outcome.error


def test_an_unsafe_url_fails_the_delivery_with_the_reason_and_no_request() -> None:
    """A URL that resolved to a public address when saved can point inside later."""
    with receiving(host="127.0.0.2") as receiver:
        endpoint = Endpoint.objects.create(url=receiver.url)
        with transaction.atomic():
            webhook_send(event_type="invoice.paid", payload={})
        outcome = delivery_attempt(delivery_id=Delivery.objects.get().pk)
    assert receiver.received == []
    assert outcome.status == DeliveryStatus.FAILED
    assert not outcome.retry
    assert "127.0.0.2 is a loopback address" in outcome.error
    attempt = Delivery.objects.get(endpoint=endpoint).attempts.get()
    assert attempt.status_code is None
    assert "127.0.0.2 is a loopback address" in attempt.error


@pytest.mark.parametrize(
    ("answer", "retry_after"),
    [((503, {"Retry-After": "3"}), 3.0), ((429, {}), None), ((500, {}), None)],
)
def test_overloaded_or_failing_receivers_are_retried(
    answer: tuple[int, dict[str, str]], retry_after: float | None
) -> None:
    with receiving(answer) as receiver:
        endpoint = endpoint_create(url=receiver.url)
        with transaction.atomic():
            webhook_send(event_type="invoice.paid", payload={})
        outcome = delivery_attempt(delivery_id=Delivery.objects.get(endpoint=endpoint).pk)
    assert (outcome.retry, outcome.retry_after) == (True, retry_after)
    assert outcome.status == DeliveryStatus.PENDING
    assert outcome.error.startswith(f"HTTP {answer[0]}")


def test_a_receiver_that_is_down_is_retried() -> None:
    endpoint = endpoint_create(url=f"http://127.0.0.1:{free_port()}/hooks")
    with transaction.atomic():
        webhook_send(event_type="invoice.paid", payload={})
    outcome = delivery_attempt(delivery_id=Delivery.objects.get(endpoint=endpoint).pk)
    assert outcome.retry
    assert outcome.error.startswith("ConnectError")
    assert Delivery.objects.get().attempts.get().error.startswith("ConnectError")


def test_retry_after_is_read_on_any_retried_answer_and_capped() -> None:
    """Not only on 429 and 503: any answer that is retried may say when (RFC 9110 allows it on
    any response). The header is read by app/retry_after.py (tests/test_retry_after.py)."""
    later = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    answers = [
        (500, {"Retry-After": "7"}),
        (408, {"Retry-After": "99999"}),
        (502, {"Retry-After": later}),
    ]
    with receiving(*answers) as receiver:
        endpoint = endpoint_create(url=receiver.url)
        with transaction.atomic():
            webhook_send(event_type="invoice.paid", payload={})
        delivery = Delivery.objects.get(endpoint=endpoint)
        outcomes = [delivery_attempt(delivery_id=delivery.pk) for _ in answers]
    assert [o.retry for o in outcomes] == [True, True, True]
    assert outcomes[0].retry_after == 7.0
    assert outcomes[1].retry_after == 600.0  # conf.RETRY_AFTER_MAX
    assert outcomes[2].retry_after is not None and 85 <= outcomes[2].retry_after <= 90


def test_webhooks_timeout_bounds_the_whole_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """A receiver that drips its answer, a byte every 0.2 s, is cut off at WEBHOOKS_TIMEOUT in
    all (it is also each read's timeout, which the drip never trips) and retried."""
    monkeypatch.setattr(conf, "TIMEOUT", 1.0)
    with dripping() as receiver:
        endpoint = endpoint_create(url=receiver.url)
        with transaction.atomic():
            webhook_send(event_type="invoice.paid", payload={})
        started = time.monotonic()
        outcome = delivery_attempt(delivery_id=Delivery.objects.get(endpoint=endpoint).pk)
        elapsed = time.monotonic() - started
    assert elapsed < 1.8
    assert (outcome.retry, outcome.status) == (True, DeliveryStatus.PENDING)
    assert outcome.error.startswith("ReadTimeout")


def test_a_compressed_answer_is_logged_as_it_came_never_expanded() -> None:
    """A few KB of gzip can expand to gigabytes: the log keeps the start of the bytes received.
    The request asks for no compression, which a receiver that honours it never uses."""
    bomb = gzip.compress(b"0" * 20_000_000)
    with receiving((200, {"Content-Encoding": "gzip"}, bomb)) as receiver:
        delivery = sent(receiver)
    assert delivery.status == DeliveryStatus.DELIVERED
    assert receiver.received[0].headers["accept-encoding"] == "identity"
    logged = delivery.attempts.get().response
    assert logged.startswith("\x1f") and "0000" not in logged
    assert len(logged) <= conf.RESPONSE_KEPT


def test_an_answer_with_nul_bytes_is_logged() -> None:
    """PostgreSQL's text columns refuse NUL: the log shows U+FFFD in its place."""
    with receiving((400, {}, b"bad\x00answer")) as receiver:
        delivery = sent(receiver)
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.attempts.get().response == "bad\ufffdanswer"


def replay_of(job_id: str) -> str:
    """A replay's job, as ``manage.py jobs replay`` makes it: a new job linked to the dead one."""
    new_id = job_enqueue("tasks.webhooks.deliver", args=[0])
    JobRecord.objects.filter(id=new_id).update(replay_of_id=job_id)
    return new_id


def test_a_replay_of_the_dead_job_sends_the_failed_delivery_again() -> None:
    """The receiver refused the message (400: failed, the job dead); it is fixed and the dead job
    replayed. Other jobs that come by, the original's redelivered message included, send nothing."""
    with receiving((400, {})) as receiver:
        delivery = sent(receiver)
        assert delivery.status == DeliveryStatus.FAILED
        original = delivery.job_id
        stranger = job_enqueue("tasks.webhooks.deliver", args=[delivery.pk])
        untouched = delivery_attempt(delivery_id=delivery.pk, job_id=stranger)
        again = delivery_attempt(delivery_id=delivery.pk, job_id=original)
        replay = replay_of(original)
        outcome = delivery_attempt(delivery_id=delivery.pk, job_id=replay)
        redelivered = delivery_attempt(delivery_id=delivery.pk, job_id=original)
        replayed_again = delivery_attempt(delivery_id=delivery.pk, job_id=replay)
    assert len(receiver.received) == 2
    assert untouched.skipped == f"the delivery is job {original}'s, not this job's"
    assert again.skipped == "the delivery is failed already; not sent again"
    assert (outcome.attempt, outcome.status, outcome.skipped) == (2, DeliveryStatus.DELIVERED, "")
    assert redelivered.skipped == f"the delivery is job {replay}'s, not this job's"
    assert replayed_again.skipped == "the delivery is delivered already; not sent again"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.job_id, delivery.error) == ("delivered", replay, "")
    assert [a.status_code for a in delivery.attempts.all()] == [400, 200]


def test_a_replay_takes_over_a_delivery_its_dead_job_left_pending() -> None:
    """A job that died without ending its delivery (killed by a time limit, say)."""
    with receiving() as receiver:
        endpoint = endpoint_create(url=receiver.url)
        with transaction.atomic():
            webhook_send(event_type="invoice.paid", payload={})
        delivery = Delivery.objects.get(endpoint=endpoint)
        outcome = delivery_attempt(delivery_id=delivery.pk, job_id=replay_of(delivery.job_id))
    assert outcome.status == DeliveryStatus.DELIVERED
    assert len(receiver.received) == 1


def test_delivery_retry_sends_a_failed_delivery_again_as_a_new_job() -> None:
    with receiving((400, {}), (503, {})) as receiver:
        delivery = sent(receiver)
        old_job = delivery.job_id
        with transaction.atomic():
            job_id = delivery_retry(delivery_id=delivery.pk)
        delivery.refresh_from_db()
        assert (delivery.status, delivery.job_id, delivery.ended_at) == ("pending", job_id, None)
        assert OutboxMessage.objects.filter(task_id=job_id, args=[delivery.pk]).exists()
        assert delivery_attempt(delivery_id=delivery.pk, job_id=old_job).skipped
        retried = delivery_attempt(delivery_id=delivery.pk, job_id=job_id)
        assert (retried.attempt, retried.retry) == (2, True)
        with pytest.raises(DeliveryNotRetryable, match="is pending: only a failed or disabled"):
            delivery_retry(delivery_id=delivery.pk)
        delivered = delivery_attempt(delivery_id=delivery.pk, job_id=job_id)
    assert delivered.status == DeliveryStatus.DELIVERED
    assert [r.headers["webhook-id"] for r in receiver.received] == [delivery.msg_id] * 3
    with pytest.raises(DeliveryNotRetryable, match="is delivered"):
        delivery_retry(delivery_id=delivery.pk)
    with pytest.raises(DeliveryNotRetryable, match="does not exist"):
        delivery_retry(delivery_id=delivery.pk + 1000)


def test_a_disabled_delivery_is_sent_again_only_once_its_endpoint_is_enabled() -> None:
    with receiving((410, {})) as receiver:
        delivery = sent(receiver)
        assert delivery.status == DeliveryStatus.DISABLED
        with pytest.raises(DeliveryNotRetryable, match="is disabled; enable it first"):
            delivery_retry(delivery_id=delivery.pk)
        Endpoint.objects.update(active=True)
        job_id = delivery_retry(delivery_id=delivery.pk)
        outcome = delivery_attempt(delivery_id=delivery.pk, job_id=job_id)
    assert outcome.status == DeliveryStatus.DELIVERED


@pytest.mark.usefixtures("development_http")
def test_send_again_in_the_admin(admin_client: Client) -> None:
    with receiving((400, {})) as receiver:
        failed = sent(receiver)
        done = sent(receiver)
    page = admin_client.post(
        "/admin/webhooks/delivery/",
        {"action": "send_again", "_selected_action": [failed.pk, done.pk]},
        follow=True,
    )
    assert page.status_code == 200
    text = page.content.decode()
    assert "1 deliveries queued to send again" in text
    assert f"delivery {done.pk} is delivered" in text
    failed.refresh_from_db()
    assert failed.status == DeliveryStatus.PENDING
    assert OutboxMessage.objects.filter(task_id=failed.job_id).exists()


@pytest.mark.usefixtures("development_http")
def test_the_delivery_log_is_in_the_admin(admin_client: Client) -> None:
    with receiving((503, {}), (200, {})) as receiver:
        delivery = sent(receiver)
        delivery_attempt(delivery_id=delivery.pk)
    page = admin_client.get(f"/admin/webhooks/delivery/{delivery.pk}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    assert delivery.msg_id in text
    assert "503" in text and "HTTP 503" in text
    for listing in ("endpoint", "delivery", "deliveryattempt"):
        assert admin_client.get(f"/admin/webhooks/{listing}/").status_code == 200
    assert Client().get("/admin/webhooks/delivery/").status_code == 302  # to the login
