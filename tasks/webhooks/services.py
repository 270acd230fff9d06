"""The webhooks family's logic: plain, typed, keyword-only functions, tested without a broker.

A message goes out in two steps. ``webhook_send`` runs in the caller's transaction: it writes one
``Delivery`` per subscribed endpoint and enqueues its job, so the webhooks leave only if the
event they announce commits. The job calls ``delivery_attempt`` once per try: one signed POST,
logged as a ``DeliveryAttempt``, and a verdict the task acts on (done, retry, failed).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import h11
import httpx
from django.db import IntegrityError, transaction
from django.utils import timezone

from app.enqueue import job_enqueue
from app.errors import PermanentError
from app.models import JobRecord
from app.retry_after import retry_after_seconds
from app.urlguard import UnsafeUrl, guarded_client
from tasks.webhooks import conf
from tasks.webhooks.models import Delivery, DeliveryAttempt, DeliveryStatus, Endpoint
from tasks.webhooks.signing import secrets_parse, webhook_sign

__all__ = [
    "AttemptOutcome",
    "DeliveryNotRetryable",
    "MessageIdInvalid",
    "delivery_attempt",
    "delivery_give_up",
    "delivery_retry",
    "endpoint_create",
    "webhook_send",
    "webhook_sign",
]

logger = logging.getLogger(__name__)

DELIVER_TASK = "tasks.webhooks.deliver"  # by name: tasks.py imports this module
#: Answers worth another try: the receiver is overloaded or down for now.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: A message id: the webhook-id header's value and ``Delivery.msg_id`` (100 characters).
MSG_ID = re.compile(r"[A-Za-z0-9_.:-]{1,100}", re.ASCII)
#: Errors in the request itself, found before it leaves (a header value no HTTP allows, a URL
#: scheme httpx cannot send): the same request fails the same way at every try. h11 (httpx's
#: HTTP/1.1, through httpcore) is named too: httpcore does not map what it raises while sending.
REQUEST_MALFORMED = (httpx.LocalProtocolError, httpx.UnsupportedProtocol, h11.LocalProtocolError)


class MessageIdInvalid(ValueError):
    """``webhook_send``'s ``msg_id`` cannot be a webhook-id header or does not fit its column."""


class DeliveryNotRetryable(ValueError):
    """``delivery_retry`` was asked for a delivery that has not ended undelivered."""


def endpoint_create(
    *,
    url: str,
    event_types: Sequence[str] = (),
    secrets: str | Sequence[str] | None = None,
    description: str = "",
) -> Endpoint:
    """Register a subscriber; a new secret is generated unless ``secrets`` are given.

    Validated as the admin validates it (``ValidationError``): the URL through the URL guard,
    the secrets' format."""
    endpoint = Endpoint(url=url, event_types=list(event_types), description=description)
    if secrets is not None:
        endpoint.secrets = " ".join(secrets_parse(secrets))
    endpoint.full_clean()
    endpoint.save()
    return endpoint


def message_body(*, payload: Any) -> bytes:
    """The exact bytes signed and sent: the same at every attempt, from the stored payload."""
    return json.dumps(
        payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
    ).encode()


def webhook_send(
    *,
    event_type: str,
    payload: Any,
    endpoints: Iterable[Endpoint] | None = None,
    msg_id: str | None = None,
) -> list[str]:
    """Send ``payload`` (JSON) as event ``event_type`` to every active endpoint subscribed to it
    (or to those of ``endpoints`` that are); return the jobs' ids.

    Call it inside the transaction that records the event: nothing is published unless it
    commits (``job_enqueue``'s outbox). Give ``msg_id`` to make the send idempotent: a second
    call with the same id sends nothing to an endpoint that already has that message, also when
    the two run at once. ``msg_id`` is 1 to 100 characters of ``[A-Za-z0-9_.:-]`` (it is sent as
    the webhook-id header); anything else raises ``MessageIdInvalid`` (a ValueError) before
    anything is written.
    """
    if not event_type or len(event_type) > 200:
        raise ValueError(f"event_type must be 1 to 200 characters, got {event_type!r}")
    if msg_id is None:
        msg_id = f"msg_{uuid.uuid4().hex}"
    elif not isinstance(msg_id, str) or not MSG_ID.fullmatch(msg_id):
        shown = repr(
            msg_id[:110] + "..." if isinstance(msg_id, str) and len(msg_id) > 110 else msg_id
        )
        raise MessageIdInvalid(
            "msg_id must be 1 to 100 characters of A-Z, a-z, 0-9 and _ . : - "
            f"(it is sent as the webhook-id header), got {shown}"
        )
    envelope = {"type": event_type, "timestamp": timezone.now().isoformat(), "data": payload}
    message_body(payload=envelope)  # not JSON: a ValueError or TypeError here, not in the job
    with transaction.atomic():
        candidates = Endpoint.objects.filter(active=True).order_by("pk")
        if endpoints is not None:
            candidates = candidates.filter(pk__in=[e.pk for e in endpoints])
        targets = [e for e in candidates if e.subscribes_to(event_type)]
        already = set(
            Delivery.objects.filter(msg_id=msg_id, endpoint__in=targets).values_list(
                "endpoint_id", flat=True
            )
        )
        job_ids = []
        for endpoint in targets:
            if endpoint.pk in already:
                continue
            try:
                # A savepoint: a send of the same message in another transaction that commits
                # first makes this insert fail on the unique constraint, which must not abort
                # the caller's transaction (PostgreSQL would refuse every query after it).
                with transaction.atomic():
                    delivery = Delivery.objects.create(
                        msg_id=msg_id, endpoint=endpoint, event_type=event_type, payload=envelope
                    )
            except IntegrityError:
                if Delivery.objects.filter(msg_id=msg_id, endpoint=endpoint).exists():
                    continue  # the other send has it: sent once
                raise
            delivery.job_id = job_enqueue(DELIVER_TASK, args=[delivery.pk])
            delivery.save(update_fields=["job_id"])
            job_ids.append(delivery.job_id)
    return job_ids


@dataclass(frozen=True)
class AttemptOutcome:
    """What one run of the delivery job found or did; ``retry`` asks the task to try again."""

    delivery_id: int
    status: str  # the delivery's status after this run
    attempt: int | None = None  # the attempt's number; None when no request was due
    status_code: int | None = None
    error: str = ""
    retry: bool = False
    retry_after: float | None = None  # seconds the receiver asked for, capped
    #: Why this job did nothing at all (the delivery ended already, or is another job's);
    #: the job then succeeds: there is nothing for it to do, now or later.
    skipped: str = ""

    def summary(self) -> dict[str, Any]:
        """The job's result: small JSON."""
        return {k: v for k, v in asdict(self).items() if v not in (None, "", False)}


def _delivery_end(delivery: Delivery, *, status: DeliveryStatus, error: str = "") -> None:
    delivery.status = status
    delivery.error = error
    delivery.ended_at = timezone.now()
    delivery.save(update_fields=["status", "error", "ended_at"])


def _response_start(response: httpx.Response) -> str:
    """The start of the answer, read no further: an endpoint could send gigabytes. Read as it
    came (``iter_raw``), never decompressed: a few KB of gzip can expand to gigabytes in one
    chunk. The request asks for ``identity``; a receiver that compresses anyway is logged raw."""
    kept = b""
    for chunk in response.iter_raw():
        kept += chunk
        if len(kept) >= conf.RESPONSE_KEPT:
            break
    text = kept[: conf.RESPONSE_KEPT].decode("utf-8", errors="replace")
    return text.replace("\x00", "\ufffd")  # PostgreSQL's text refuses NUL


def _is_replay(*, job_id: str, of: str) -> bool:
    """True if job ``job_id`` is a replay (``manage.py jobs replay``, the admin) of job ``of``."""
    try:
        job, original = uuid.UUID(job_id), uuid.UUID(of)
    except ValueError:
        return False
    return JobRecord.objects.filter(id=job, replay_of_id=original).exists()


def _job_check(delivery: Delivery, *, job_id: str | None) -> str:
    """Why job ``job_id`` must not post ``delivery`` ("" if it may); called with the row locked.

    A delivery is its job's (``Delivery.job_id``): the job that webhook_send or delivery_retry
    enqueued, with its retries and redelivered messages. A replay of that job, once it is dead,
    takes the delivery over and sends it again: a failed delivery is pending again, under the
    replay's id (so that a replay of the replay works the same). Any other job leaves it alone.
    """
    if job_id is not None and delivery.job_id != job_id:
        reopen = delivery.status in (DeliveryStatus.PENDING, DeliveryStatus.FAILED)
        if not (reopen and _is_replay(job_id=job_id, of=delivery.job_id)):
            return f"the delivery is job {delivery.job_id or '?'}'s, not this job's"
        logger.info("delivery %s: job %s replays job %s", delivery.pk, job_id, delivery.job_id)
        _delivery_reopen(delivery, job_id=job_id)
    if delivery.status != DeliveryStatus.PENDING:
        return f"the delivery is {delivery.status} already; not sent again"
    return ""


def _delivery_reopen(delivery: Delivery, *, job_id: str) -> None:
    delivery.status = DeliveryStatus.PENDING
    delivery.error = ""
    delivery.ended_at = None
    delivery.job_id = job_id
    delivery.save(update_fields=["status", "error", "ended_at", "job_id"])


def delivery_retry(*, delivery_id: int) -> str:
    """Send a delivery that ended undelivered again, as a new job; return the job's id.

    For a delivery ``failed`` (a 4xx, retries ran out, a refused URL), or ``disabled`` once its
    endpoint is active again: it is pending again, with the same message id, body and attempt
    log (numbering goes on), and the new job has every retry again. Call it in a transaction of
    your own or not: the job is published when the change commits. Anything else raises
    ``DeliveryNotRetryable``. The admin's "Send again" action calls it.
    """
    with transaction.atomic():
        delivery = (
            Delivery.objects.select_for_update(of=("self",))
            .select_related("endpoint")
            .filter(pk=delivery_id)
            .first()
        )
        if delivery is None:
            raise DeliveryNotRetryable(f"webhook delivery {delivery_id} does not exist")
        if delivery.status not in (DeliveryStatus.FAILED, DeliveryStatus.DISABLED):
            raise DeliveryNotRetryable(
                f"delivery {delivery_id} is {delivery.status}: only a failed or disabled one "
                "is sent again"
            )
        if not delivery.endpoint.active:
            raise DeliveryNotRetryable(
                f"delivery {delivery_id}: its endpoint {delivery.endpoint} is disabled; "
                "enable it first"
            )
        job_id = job_enqueue(DELIVER_TASK, args=[delivery.pk])
        _delivery_reopen(delivery, job_id=job_id)
    return job_id


def delivery_attempt(*, delivery_id: int, job_id: str | None = None) -> AttemptOutcome:
    """Make one attempt at a pending delivery, log it, and say what comes next.

    ``job_id`` is the running job's (the task passes it; None outside a job). The delivery is
    posted only by its own job (see ``_job_check``): a job whose delivery ended already (a
    redelivered message) or that is not the delivery's does nothing (``skipped``), and a replay
    of the delivery's dead job sends it again. A delivery whose endpoint was disabled meanwhile
    ends ``disabled`` without a request. The outcome of the POST:
    - 2xx: delivered;
    - 410 Gone: the receiver wants no more; the endpoint is disabled, the delivery ends;
    - 408, 425, 429 and 5xx, a timeout or a connection error: retry (after Retry-After, if sent);
    - a redirect: failed (Standard Webhooks: a redirect is not success; they are not followed);
    - any other answer: failed, not retried (the receiver refuses this message);
    - a URL the guard refuses, or a request that cannot be made (a header value HTTP does not
      allow, from a row written before ``msg_id`` was checked): failed, not retried.
    """
    with transaction.atomic():
        try:
            delivery = (
                Delivery.objects.select_for_update(of=("self",))
                .select_related("endpoint")
                .get(pk=delivery_id)
            )
        except Delivery.DoesNotExist:
            raise PermanentError(f"webhook delivery {delivery_id} does not exist") from None
        skipped = _job_check(delivery, job_id=job_id)
    if skipped:
        logger.info("delivery %s not sent by job %s: %s", delivery_id, job_id, skipped)
        return AttemptOutcome(delivery_id=delivery_id, status=delivery.status, skipped=skipped)
    endpoint = delivery.endpoint
    if not endpoint.active:
        error = f"endpoint {endpoint.pk} is disabled: {endpoint.disabled_reason or 'by hand'}"
        _delivery_end(delivery, status=DeliveryStatus.DISABLED, error=error)
        return AttemptOutcome(delivery_id=delivery_id, status=delivery.status, error=error)

    number = delivery.attempts.count() + 1
    body = message_body(payload=delivery.payload)
    timestamp = int(time.time())  # this attempt's: receivers refuse stale timestamps
    headers = {
        "content-type": "application/json",
        "user-agent": conf.USER_AGENT,
        "accept-encoding": "identity",
        "webhook-id": delivery.msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": webhook_sign(
            msg_id=delivery.msg_id, timestamp=timestamp, body=body, secrets=endpoint.secrets
        ),
    }
    status_code: int | None = None
    retry_after_header: str | None = None
    location = ""
    answer = error = ""
    retry = False
    started = time.monotonic()
    try:
        with (
            # conf.TIMEOUT for each socket operation, and for the whole request (a receiver
            # that drips its answer a byte at a time is cut off too).
            guarded_client(timeout=conf.TIMEOUT, deadline=conf.TIMEOUT) as client,
            client.stream("POST", endpoint.url, content=body, headers=headers) as response,
        ):
            status_code = response.status_code
            retry_after_header = response.headers.get("retry-after")
            location = response.headers.get("location", "")
            answer = _response_start(response)
    except UnsafeUrl as exc:
        error = str(exc)
    except REQUEST_MALFORMED as exc:
        error = f"{type(exc).__name__}: {exc}; the request cannot be made as it is, not retried"
    except httpx.TransportError as exc:  # timeouts, refused connections, resets, bad answers
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        retry = True
    latency_ms = round((time.monotonic() - started) * 1000)

    retry_after = None
    status = DeliveryStatus.PENDING
    if status_code is None:
        status = DeliveryStatus.PENDING if retry else DeliveryStatus.FAILED
    elif 200 <= status_code < 300:
        status = DeliveryStatus.DELIVERED
    elif status_code == 410:
        status = DeliveryStatus.DISABLED
        error = f"HTTP 410 Gone: the endpoint asked for no more webhooks; {endpoint.url} disabled"
    elif status_code in RETRY_STATUSES or status_code >= 500:
        retry = True
        retry_after = retry_after_seconds(
            value=retry_after_header, now=timezone.now(), cap=conf.RETRY_AFTER_MAX
        )
        error = f"HTTP {status_code}"
        if retry_after_header:
            error += f", Retry-After: {retry_after_header}"
    elif 300 <= status_code < 400:
        status = DeliveryStatus.FAILED
        error = (
            f"HTTP {status_code} redirect to {location or '?'}: not followed, a redirect "
            "is not success (Standard Webhooks); update the endpoint's URL"
        )
    else:
        status = DeliveryStatus.FAILED
        error = f"HTTP {status_code}: the receiver refused the message; not retried"

    with transaction.atomic():
        DeliveryAttempt.objects.create(
            delivery=delivery,
            number=number,
            status_code=status_code,
            latency_ms=latency_ms,
            error=error,
            response=answer,
        )
        if status == DeliveryStatus.DISABLED:
            Endpoint.objects.filter(pk=endpoint.pk).update(
                active=False,
                disabled_at=timezone.now(),
                disabled_reason=f"answered 410 Gone to {delivery.msg_id}",
            )
        if status != DeliveryStatus.PENDING:
            _delivery_end(delivery, status=status, error=error)
        elif error:
            delivery.error = error
            delivery.save(update_fields=["error"])
    return AttemptOutcome(
        delivery_id=delivery_id,
        status=status,
        attempt=number,
        status_code=status_code,
        error=error,
        retry=retry,
        retry_after=retry_after,
    )


def delivery_give_up(*, delivery_id: int, error: str) -> None:
    """End a delivery whose retries ran out as failed (if it is still pending)."""
    Delivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING).update(
        status=DeliveryStatus.FAILED, error=error, ended_at=timezone.now()
    )
