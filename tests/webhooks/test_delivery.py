"""The whole path with a real worker on the ``api`` queue: send in a transaction, the outbox
publishes, the worker POSTs to a real local receiver, retries with backoff or after Retry-After,
gives up on what cannot work and dead-letters it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from django.db import transaction
from django.test import override_settings
from standardwebhooks.webhooks import Webhook

from app.deadletters import dead_letters_replay
from app.enqueue import job_enqueue
from app.models import JobRecord
from tasks.webhooks.models import Delivery, DeliveryStatus, Endpoint
from tasks.webhooks.services import delivery_retry, endpoint_create, webhook_send
from tasks.webhooks.signing import secret_generate
from tests.support import Broker, Worker, running_worker, wait_for
from tests.webhooks.receiver import Receiver, receiving

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def worker(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One worker for the module, allowed to reach the local receivers (and only them)."""
    with running_worker(
        queues_="api",
        pool="threads",
        concurrency=4,
        log_dir=tmp_path_factory.mktemp("webhooks"),
        env={"OUTGOING_ALLOWED_NETWORKS": "127.0.0.1/32"},
    ) as worker:
        yield worker


@pytest.fixture(autouse=True)
def local_receivers(broker: Broker, worker: Worker) -> Iterator[None]:
    with override_settings(OUTGOING_ALLOWED_NETWORKS=["127.0.0.1/32"]):
        yield


def send(receiver: Receiver | str, **endpoint: object) -> Delivery:
    url = receiver if isinstance(receiver, str) else receiver.url
    created = endpoint_create(url=url, **endpoint)  # type: ignore[arg-type]
    with transaction.atomic():
        webhook_send(event_type="invoice.paid", payload={"invoice": 7}, endpoints=[created])
    return Delivery.objects.get(endpoint=created)


def ended(delivery: Delivery, timeout: float = 20) -> Delivery:
    def check() -> Delivery | None:
        delivery.refresh_from_db()
        return delivery if delivery.status != DeliveryStatus.PENDING else None

    return wait_for(check, timeout=timeout, what=f"delivery {delivery.msg_id} to end")


def job(delivery: Delivery) -> JobRecord:
    return wait_for(
        lambda: JobRecord.objects.filter(id=delivery.job_id, finished_at__isnull=False).first(),
        what="the delivery job to end",
    )


def test_a_webhook_arrives_signed_and_verifies_with_either_secret_during_rotation() -> None:
    new, old = secret_generate(), secret_generate()
    with receiving() as receiver:
        delivery = ended(send(receiver, secrets=f"{new} {old}"))
    assert delivery.status == DeliveryStatus.DELIVERED
    [request] = receiver.received
    for secret in (new, old):
        assert Webhook(secret).verify(request.body, request.headers)["data"] == {"invoice": 7}
    assert job(delivery).status == "succeeded"


def test_a_503_is_retried_with_the_same_message_id_and_every_attempt_is_logged() -> None:
    with receiving((503, {})) as receiver:
        delivery = ended(send(receiver))
    assert delivery.status == DeliveryStatus.DELIVERED
    first, second = receiver.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery.msg_id
    assert first.body == second.body
    attempts = list(delivery.attempts.values_list("number", "status_code", "error"))
    assert attempts == [(1, 503, "HTTP 503"), (2, 200, "")]
    assert all(a.latency_ms is not None for a in delivery.attempts.all())
    assert job(delivery).status == "succeeded"
    assert job(delivery).attempts == 2


def test_a_429_waits_as_long_as_its_retry_after_asks() -> None:
    with receiving((429, {"Retry-After": "2"})) as receiver:
        delivery = ended(send(receiver))
    first, second = receiver.received
    assert second.at - first.at >= 2.0
    assert int(second.headers["webhook-timestamp"]) >= int(first.headers["webhook-timestamp"]) + 2
    assert delivery.status == DeliveryStatus.DELIVERED
    assert [a.status_code for a in delivery.attempts.all()] == [429, 200]


def test_a_400_is_not_retried_and_the_job_is_dead_lettered(broker: Broker) -> None:
    with receiving((400, {})) as receiver:
        delivery = ended(send(receiver))
        record = job(delivery)
        time.sleep(1.5)  # time for a (wrong) retry to show up
    assert len(receiver.received) == 1
    assert delivery.status == DeliveryStatus.FAILED
    assert "HTTP 400: the receiver refused the message; not retried" in delivery.error
    assert record.status == "dead"
    assert "HTTP 400" in record.error
    message = wait_for(lambda: broker.get("api.dead"), what="the job in api.dead")
    assert message.headers["id"] == delivery.job_id


def test_replaying_the_dead_job_sends_the_failed_delivery_again(broker: Broker) -> None:
    """`manage.py jobs replay <id>` after the receiver is fixed: the README's promise."""
    with receiving((400, {})) as receiver:
        delivery = ended(send(receiver))
        dead = job(delivery)
        assert dead.status == "dead"
        wait_for(lambda: broker.depth("api.dead") or None, what="the job in api.dead")
        [(_old, new)] = dead_letters_replay(job_ids=[str(dead.id)])
        replay = wait_for(
            lambda: JobRecord.objects.filter(id=new, finished_at__isnull=False).first(),
            what="the replay to end",
        )
    delivery.refresh_from_db()
    assert replay.status == "succeeded", replay.error
    assert (delivery.status, delivery.job_id) == (DeliveryStatus.DELIVERED, new)
    assert len(receiver.received) == 2


def test_send_again_and_a_stray_job_on_an_ended_delivery() -> None:
    """A job that finds its delivery ended (or another job's) succeeds doing nothing: it does
    not go dead with an empty error. delivery_retry's job sends it."""
    with receiving((400, {})) as receiver:
        delivery = ended(send(receiver))
        with transaction.atomic():
            stray = job_enqueue("tasks.webhooks.deliver", args=[delivery.pk])
        record = wait_for(
            lambda: JobRecord.objects.filter(id=stray, finished_at__isnull=False).first(),
            what="the stray job to end",
        )
        assert record.status == "succeeded", record.error
        assert (record.result or {})["skipped"].startswith("the delivery is job ")
        with transaction.atomic():
            delivery_retry(delivery_id=delivery.pk)
        delivery.refresh_from_db()
        delivery = ended(delivery)
    assert delivery.status == DeliveryStatus.DELIVERED
    assert job(delivery).status == "succeeded"
    assert len(receiver.received) == 2


def test_a_410_disables_the_endpoint() -> None:
    with receiving((410, {})) as receiver:
        delivery = ended(send(receiver))
    endpoint = Endpoint.objects.get(pk=delivery.endpoint_id)
    assert (delivery.status, endpoint.active) == (DeliveryStatus.DISABLED, False)
    assert endpoint.disabled_reason == f"answered 410 Gone to {delivery.msg_id}"
    assert len(receiver.received) == 1
    assert job(delivery).status == "succeeded"


def test_an_address_the_worker_may_not_reach_fails_with_the_reason_and_no_request() -> None:
    """The worker allows 127.0.0.1/32 only; 127.0.0.2 is loopback like any other."""
    with receiving(host="127.0.0.2") as receiver:
        url = receiver.url
        endpoint = Endpoint.objects.create(url=url)  # as if it had resolved elsewhere when saved
        with transaction.atomic():
            webhook_send(event_type="invoice.paid", payload={})
        delivery = ended(Delivery.objects.get(endpoint=endpoint))
    assert receiver.received == []
    assert delivery.status == DeliveryStatus.FAILED
    assert f"{url}: refused, 127.0.0.2 is a loopback address" in delivery.error
    assert delivery.attempts.get().error == delivery.error
    assert job(delivery).status == "dead"
