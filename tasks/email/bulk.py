"""Many emails: one bulk job fans out batch jobs; each batch goes over one SMTP connection.

The state of each recipient (``BulkRecipient.state``) is the claim on its send, as
``app/idempotency.py`` describes: a batch moves a recipient from ``pending`` to ``sending`` in
one committed UPDATE, over SMTP right before the final line of the message (tasks/email/smtp.py
says why there), and to a final state after the server's answer. A retried or redelivered batch
only sends to recipients still ``pending``, so no one gets the message twice. A recipient found
``sending`` by a later run was being handed over when a worker died: the server most likely has
it, so it is not resent and counts as ``unknown`` (never silently).

The bulk's job record shows progress; the batch that ends the last recipient ends the record
with the counts. The send rate holds across every worker (``app.ratelimit``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.core.mail.backends.base import BaseEmailBackend
from django.db import transaction
from django.db.models import Case, Count, Q, QuerySet, Value, When
from django.utils import timezone

from app.enqueue import job_enqueue
from app.errors import PermanentError, TransientError
from app.ratelimit import rate_wait
from app.records import record_cancelled, record_fail, record_progress, record_succeed
from tasks.email import conf
from tasks.email.models import Bulk, BulkRecipient, RecipientState
from tasks.email.services import (
    EmailInvalid,
    address_check,
    address_key,
    connection_open,
    email_build,
    smtp_outcome,
)
from tasks.email.smtp import HookedBackend, MessageAbandoned

logger = logging.getLogger(__name__)

#: The error of a recipient that was in flight when a worker died.
UNKNOWN = "unknown: stopped after handing the message over (the server most likely has it)"
#: Recipients between two progress writes (and checks for a cancel) of a batch.
PROGRESS_EVERY = 50
#: Why the recipients left of a cancelled bulk send failed.
CANCELLED = "cancelled"
#: The rate limit's key: one budget for every sender of this project's SMTP account.
RATE_KEY = "email:smtp"


def bulk_start(
    *,
    template: str,
    recipients: Sequence[str],
    context: dict[str, Any] | None = None,
    from_email: str | None = None,
    owner: User | None = None,
) -> str:
    """Enqueue a bulk send of ``template`` to each recipient (``{{ recipient }}`` in the
    template is the address); return the job id whose record shows progress and counts.

    Addresses are checked and de-duplicated here, and the template is rendered once, so bad
    input is an EmailInvalid before anything is enqueued.
    """
    unique: dict[str, str] = {}
    for address in recipients:
        unique.setdefault(address_key(address_check(address)), address.strip())
    if not unique:
        raise EmailInvalid("a bulk send needs at least one recipient")
    if len(unique) > conf.MAX_BULK_RECIPIENTS:
        raise EmailInvalid(
            f"{len(unique)} recipients, more than EMAIL_MAX_BULK_RECIPIENTS "
            f"({conf.MAX_BULK_RECIPIENTS}): split the send"
        )
    addresses = list(unique.values())
    context = context or {}
    email_build(
        template=template,
        to=[addresses[0]],
        context={**context, "recipient": addresses[0]},
        from_email=from_email,
    )
    size = max(1, conf.BATCH_SIZE)
    with transaction.atomic():
        job_id = job_enqueue("tasks.email.bulk", kwargs={}, owner=owner)
        bulk = Bulk.objects.create(
            id=job_id,
            template=template,
            context=context,
            from_email=from_email or "",
            batches=(len(addresses) + size - 1) // size,
        )
        BulkRecipient.objects.bulk_create(
            BulkRecipient(bulk=bulk, address=address, batch=index // size)
            for index, address in enumerate(addresses)
        )
    return job_id


def bulk_fan_out(*, bulk_id: str) -> int:
    """Enqueue one batch job per batch, once however often the bulk job runs. Returns how
    many were enqueued by this call."""
    with transaction.atomic():
        bulk = Bulk.objects.select_for_update().get(id=bulk_id)
        if bulk.fanned_out:
            return 0
        for batch in range(bulk.batches):
            job_enqueue("tasks.email.send_batch", kwargs={"bulk_id": bulk_id, "batch": batch})
        bulk.fanned_out = True
        bulk.save(update_fields=["fanned_out"])
    return bulk.batches


def _claim(recipient: BulkRecipient, sent: list[int]) -> bool:
    """Claim ``recipient``'s send. The same statement (one commit, one round trip) marks
    ``sent``, the recipients the server took since the last claim, as sent. Left unmarked when
    a worker dies, those count as ``unknown`` and, rightly, are not resent."""
    marked = list(sent)
    changed = BulkRecipient.objects.filter(
        Q(id=recipient.id, state=RecipientState.PENDING) | Q(id__in=marked)
    ).update(
        state=Case(
            When(id=recipient.id, then=Value(RecipientState.SENDING)),
            default=Value(RecipientState.SENT),
        ),
        error="",  # a deferral's reply, from an earlier attempt
        updated_at=timezone.now(),
    )
    del sent[: len(marked)]
    return changed == len(marked) + 1


def _sent_mark(ids: list[int]) -> None:
    if ids:
        BulkRecipient.objects.filter(id__in=ids).update(
            state=RecipientState.SENT, error="", updated_at=timezone.now()
        )


def _settle(recipient: BulkRecipient, state: RecipientState, error: str = "") -> None:
    BulkRecipient.objects.filter(id=recipient.id).update(
        state=state, error=error[:500], updated_at=timezone.now()
    )


def batch_send(*, bulk_id: str, batch: int, final_attempt: bool) -> dict[str, int]:
    """Send one batch over one SMTP connection; return this run's counts.

    A 5xx for a recipient rejects that recipient and the batch goes on. A 4xx for a recipient
    defers it: the batch ends the others, then raises TransientError so the job retries only
    the deferred ones. A connection failure raises TransientError at once (what was sent stays
    sent). An authentication failure aborts the whole bulk (PermanentError). On the final
    attempt, what is left fails instead of being retried.
    """
    bulk = Bulk.objects.get(id=bulk_id)
    counts = {"sent": 0, "rejected": 0, "deferred": 0, "unknown": 0}
    if bulk.aborted:
        return counts
    mine = BulkRecipient.objects.filter(bulk_id=bulk_id, batch=batch)
    counts["unknown"] = mine.filter(state=RecipientState.SENDING).update(
        state=RecipientState.FAILED, error=UNKNOWN
    )
    pending = list(mine.filter(state=RecipientState.PENDING).order_by("id"))
    if pending:
        try:
            _batch_deliver(bulk, pending, counts)
        except _Stop as stop:
            _stop(bulk, batch, stop, final_attempt=final_attempt)
    if counts["deferred"]:
        if not final_attempt:
            bulk_progress(bulk_id=bulk_id)
            raise TransientError(f"{counts['deferred']} recipients deferred (SMTP 4xx); retrying")
        mine.filter(state=RecipientState.PENDING).update(
            state=RecipientState.FAILED, error="deferred (SMTP 4xx) until retries ran out"
        )
    bulk_progress(bulk_id=bulk_id)
    return counts


class _Stop(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def _connection_open() -> BaseEmailBackend:
    """One connection for the batch (claims at the final line over SMTP: services.py)."""
    try:
        return connection_open()
    except Exception as exc:
        outcome = smtp_outcome(exc)
        raise _Stop(outcome.kind, outcome.message) from exc


def _batch_deliver(bulk: Bulk, pending: list[BulkRecipient], counts: dict[str, int]) -> None:
    connection = _connection_open()
    sent: list[int] = []
    try:
        for number, recipient in enumerate(pending, start=1):
            if number % PROGRESS_EVERY == 0:
                _sent_mark(sent)
                sent.clear()
                if bulk_progress(bulk_id=str(bulk.id)).get("stopped"):
                    return  # cancelled or aborted meanwhile: the rest already failed
            _recipient_deliver(connection, bulk, recipient, counts, sent)
    finally:
        _sent_mark(sent)
        try:
            connection.close()
        except Exception:  # the connection is gone already; closing it can fail too
            logger.debug("SMTP connection close failed", exc_info=True)


def _recipient_deliver(
    connection: BaseEmailBackend,
    bulk: Bulk,
    recipient: BulkRecipient,
    counts: dict[str, int],
    sent: list[int],
) -> None:
    """Send to one recipient, claimed as late as the backend allows; count the outcome."""
    rate_wait(key=RATE_KEY, per_second=conf.SEND_RATE)
    try:
        message = email_build(
            template=bulk.template,
            to=[recipient.address],
            context={**bulk.context, "recipient": recipient.address},
            from_email=bulk.from_email or None,
        )
    except EmailInvalid as exc:
        _settle(recipient, RecipientState.REJECTED, str(exc))
        counts["rejected"] += 1
        return
    claimed = False

    def claim() -> bool:
        nonlocal claimed
        claimed = _claim(recipient, sent)
        return claimed

    if isinstance(connection, HookedBackend):
        connection.before_end_set(claim)  # claimed right before the server takes it
    elif not claim():  # another backend: claimed before the call
        return
    try:
        connection.send_messages([message])
    except MessageAbandoned as exc:  # claimed by another run meanwhile: it is theirs
        raise _Stop("transient", str(exc)) from exc
    except Exception as exc:
        outcome = smtp_outcome(exc)
        if outcome.kind in ("rejected", "invalid"):  # this recipient's message only
            _settle(recipient, RecipientState.REJECTED, outcome.message)
            counts["rejected"] += 1
            return
        if outcome.kind == "transient" and claimed and isinstance(connection, HookedBackend):
            # Lost after the whole message went out: the server may have it. Not resent.
            _settle(recipient, RecipientState.FAILED, UNKNOWN)
            counts["unknown"] += 1
        else:  # the server did not take it: pending again, for the retry
            _settle(recipient, RecipientState.PENDING, outcome.message)
        if outcome.kind == "deferred":
            counts["deferred"] += 1
            return
        raise _Stop(outcome.kind, outcome.message) from exc
    sent.append(recipient.id)  # marked with the next claim, or at the end of the batch
    counts["sent"] += 1


def _stop(bulk: Bulk, batch: int, stop: _Stop, *, final_attempt: bool) -> None:
    if stop.kind in ("abort", "invalid"):
        logger.error("bulk email %s aborted: %s", bulk.id, stop.message)
        bulk_abort(bulk_id=str(bulk.id), reason=stop.message)
        raise PermanentError(stop.message)
    if final_attempt:
        BulkRecipient.objects.filter(
            bulk_id=bulk.id, batch=batch, state=RecipientState.PENDING
        ).update(state=RecipientState.FAILED, error=f"retries ran out: {stop.message}"[:500])
        bulk_progress(bulk_id=str(bulk.id))
        raise PermanentError(f"batch {batch} gave up: {stop.message}")
    bulk_progress(bulk_id=str(bulk.id))
    raise TransientError(stop.message)


def bulk_abort(*, bulk_id: str, reason: str) -> None:
    """Stop a whole bulk send: its pending recipients fail with ``reason``; its record fails."""
    with transaction.atomic():
        Bulk.objects.filter(id=bulk_id).update(aborted=reason[:500])
        BulkRecipient.objects.filter(bulk_id=bulk_id, state=RecipientState.PENDING).update(
            state=RecipientState.FAILED, error=reason[:500]
        )
    bulk_progress(bulk_id=bulk_id)


def bulk_counts(*, bulk_id: str) -> dict[str, int]:
    states = dict(
        BulkRecipient.objects.filter(bulk_id=bulk_id)
        .values_list("state")
        .annotate(n=Count("id"))
        .values_list("state", "n")
    )
    unknown = BulkRecipient.objects.filter(
        bulk_id=bulk_id, state=RecipientState.FAILED, error=UNKNOWN
    ).count()
    return {
        "recipients": sum(states.values()),
        "sent": states.get(RecipientState.SENT, 0),
        "rejected": states.get(RecipientState.REJECTED, 0),
        "failed": states.get(RecipientState.FAILED, 0),
        "unknown": unknown,  # included in failed
        "pending": states.get(RecipientState.PENDING, 0) + states.get(RecipientState.SENDING, 0),
    }


def bulk_progress(*, bulk_id: str) -> dict[str, int]:
    """Write the bulk's progress on its record; end the record once no recipient is left.

    Every batch calls this after its own writes committed, so the last one to finish sees all
    recipients ended; the conditional UPDATE of ``ended_at`` ends the record exactly once.
    """
    counts = bulk_counts(bulk_id=bulk_id)
    done = counts["recipients"] - counts["pending"]
    percent = 100 * done // max(1, counts["recipients"])
    message = f"{done} of {counts['recipients']}"
    if record_progress(job_id=bulk_id, percent=percent, message=message) and counts["pending"]:
        bulk_abort(bulk_id=bulk_id, reason=CANCELLED)  # ends the bulk: calls this again
        return {**counts, "stopped": 1}
    if counts["pending"]:
        return {
            **counts,
            "stopped": int(Bulk.objects.filter(id=bulk_id).exclude(aborted="").exists()),
        }
    with transaction.atomic():
        if Bulk.objects.filter(id=bulk_id, ended_at=None).update(ended_at=timezone.now()) != 1:
            return counts
        result = {key: value for key, value in counts.items() if key != "pending"}
        aborted = Bulk.objects.values_list("aborted", flat=True).get(id=bulk_id)
        if aborted == CANCELLED:
            record_cancelled(job_id=bulk_id)
        elif aborted:
            record_fail(job_id=bulk_id, error=f"aborted: {aborted}", traceback="", dead=False)
        else:
            record_succeed(job_id=bulk_id, result=result)
    return counts


def batch_abandon(*, bulk_id: str, batch: int, error: str) -> None:
    """A batch job ended for good: its recipients left fail with ``error`` (those it was handing
    over, as unknown), and the bulk send ends if they were the last."""
    _recipients_abandon(
        BulkRecipient.objects.filter(bulk_id=bulk_id, batch=batch), f"the batch job failed: {error}"
    )
    bulk_progress(bulk_id=bulk_id)


def _recipients_abandon(recipients: QuerySet[BulkRecipient], error: str) -> None:
    recipients.filter(state=RecipientState.SENDING).update(
        state=RecipientState.FAILED, error=UNKNOWN
    )
    recipients.filter(state=RecipientState.PENDING).update(
        state=RecipientState.FAILED, error=error[:500]
    )


def bulks_sweep(*, idle_since: datetime) -> int:
    """End the bulk sends started before ``idle_since`` whose recipients have not changed since
    (a batch job lost for good, a bulk cancelled before it fanned out). Returns how many."""
    stale = Bulk.objects.filter(ended_at=None, created_at__lt=idle_since).exclude(
        recipients__updated_at__gte=idle_since
    )
    ended = 0
    for bulk_id in stale.values_list("id", flat=True):
        _recipients_abandon(
            BulkRecipient.objects.filter(bulk_id=bulk_id), "abandoned: no progress for a day"
        )
        bulk_progress(bulk_id=str(bulk_id))
        ended += 1
    return ended


def bulks_prune(*, before: datetime) -> int:
    """Delete bulk sends that ended before ``before``, with their recipients. Returns how many."""
    _, per_model = Bulk.objects.filter(ended_at__lt=before).delete()
    return per_model.get(Bulk._meta.label, 0)
