"""The notifications family's logic: plain keyword-only functions, tested without a broker.

``notification_send`` validates, records and enqueues; ``notification_deliver`` (run by the job)
makes the one call to the provider.

At most once. Delivery of jobs is at least once (a worker that dies mid-job leaves its message
to be delivered again), and a text message cannot be taken back, so the send is claimed
(``app.idempotency.effect_claim``) in a committed transaction right before the provider is
called. A later run that finds the claim taken and no outcome recorded cannot know whether the
provider got the message: it sends nothing, and records the notification as ``unknown``. The
claim is given back only when the provider's answer proves nothing was sent (no connection, a
429 or 5xx, a 4xx), so that a retry may try again.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

from app.enqueue import job_enqueue
from app.errors import PermanentError
from app.idempotency import effect_claim, effect_release
from tasks.notifications import conf
from tasks.notifications.models import Notification, NotificationStatus
from tasks.notifications.providers import (
    ProviderOutcomeUnknown,
    ProviderRejected,
    ProviderUnavailable,
    provider_load,
)

logger = logging.getLogger(__name__)

DELIVER_TASK = "tasks.notifications.deliver"
#: Twilio refuses a longer Body (error 21617); it splits what it takes into segments.
SMS_BODY_MAX = 1600
#: Push services cap the whole payload at about 4 KB (FCM, APNs): body, title and data share it.
PUSH_BODY_MAX = 2000
TITLE_MAX = 200
DATA_MAX_BYTES = 2000
TOKEN_MAX = 4096
#: E.164: a plus, a country code that does not start with 0, at most 15 digits in all.
E164 = re.compile(r"\+[1-9][0-9]{1,14}")
#: A device token: visible ASCII, no spaces (FCM tokens, APNs hex tokens, Expo's...).
DEVICE_TOKEN = re.compile(r"[\x21-\x7e]+")


class NotificationInvalid(ValueError):
    """Input that cannot become a notification; the message names the field and the problem."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


def _text_check(
    *, field: str, value: object, max_chars: int, lines: bool, empty: bool = False
) -> str:
    """Text the providers and the database take: a str, not blank, not too long, with no control
    characters (but newlines and tabs where ``lines``) and no lone surrogates."""
    if not isinstance(value, str):
        raise NotificationInvalid(field, f"must be text, not {type(value).__name__}")
    if not empty and not value.strip():
        raise NotificationInvalid(field, "must not be empty")
    if len(value) > max_chars:
        raise NotificationInvalid(
            field, f"must be at most {max_chars} characters, got {len(value)}"
        )
    for position, char in enumerate(value):
        category = unicodedata.category(char)
        if category == "Cs":
            raise NotificationInvalid(field, f"is not valid Unicode (lone surrogate at {position})")
        if category == "Cc" and not (lines and char in "\n\t"):
            raise NotificationInvalid(
                field, f"must not contain control character U+{ord(char):04X} (at {position})"
            )
    return value


def notification_validate(
    *, channel: object, to: object, body: object, title: object = None, data: object = None
) -> None:
    """Refuse, before anything is recorded or enqueued, what a provider would refuse later or
    the database cannot store: a clear ``NotificationInvalid`` naming the field."""
    channels = conf.providers()
    if not isinstance(channel, str) or channel not in channels:
        raise NotificationInvalid("channel", f"must be one of {sorted(channels)}, got {channel!r}")
    if channel == "sms":
        if not isinstance(to, str) or not E164.fullmatch(to):
            raise NotificationInvalid(
                "to", f"must be a phone number in E.164 form, like +14155550100, got {to!r:.40}"
            )
        _text_check(field="body", value=body, max_chars=SMS_BODY_MAX, lines=True)
        if title is not None or data is not None:
            raise NotificationInvalid("title" if title is not None else "data", "SMS have none")
        return
    to = _text_check(field="to", value=to, max_chars=TOKEN_MAX, lines=False)
    if not DEVICE_TOKEN.fullmatch(to):
        raise NotificationInvalid("to", "must be a device token: visible ASCII, no spaces")
    _text_check(field="body", value=body, max_chars=PUSH_BODY_MAX, lines=True)
    if title is not None:
        _text_check(field="title", value=title, max_chars=TITLE_MAX, lines=False)
    if data is not None:
        _data_check(data=data)


def _data_check(*, data: object) -> None:
    """Push data is a flat map of text to text (what FCM's ``data`` takes), and small."""
    if not isinstance(data, dict):
        raise NotificationInvalid(
            "data", f"must be an object of text values, not {type(data).__name__}"
        )
    for key, value in data.items():
        _text_check(field="data key", value=key, max_chars=100, lines=False)
        _text_check(
            field=f"data[{key!r}]", value=value, max_chars=DATA_MAX_BYTES, lines=True, empty=True
        )
    size = len(json.dumps(data, ensure_ascii=False).encode())
    if size > DATA_MAX_BYTES:
        raise NotificationInvalid(
            "data", f"must be at most {DATA_MAX_BYTES} bytes as JSON, got {size}"
        )


def notification_send(
    *,
    channel: str,
    to: str,
    body: str,
    title: str | None = None,
    data: dict[str, str] | None = None,
) -> str:
    """Record a notification and enqueue its delivery in the caller's transaction; return the
    job id. Invalid input raises ``NotificationInvalid`` and enqueues nothing; so does a rollback
    of the caller's transaction (the job is published only after commit)."""
    notification_validate(channel=channel, to=to, body=body, title=title, data=data)
    with transaction.atomic():
        notification = Notification.objects.create(
            channel=channel, to=to, body=body, title=title or "", data=data
        )
        job_id = job_enqueue(DELIVER_TASK, kwargs={"notification_id": notification.id})
        Notification.objects.filter(id=notification.id).update(job_id=job_id)
    return job_id


def _claim_key(notification_id: int) -> str:
    return f"notifications:send:{notification_id}"


def _result(notification: Notification) -> dict[str, Any]:
    return {
        "notification_id": notification.id,
        "status": notification.status,
        "provider_message_id": notification.provider_message_id,
    }


def _record(notification_id: int, **fields: Any) -> None:
    Notification.objects.filter(id=notification_id).update(**fields, updated_at=timezone.now())


def notification_deliver(*, notification_id: int) -> dict[str, Any]:
    """Hand notification ``notification_id`` to its channel's provider, at most once (see the
    module docstring), and record what happened.

    Raises ``ProviderUnavailable`` (retry), ``ProviderRejected`` (not sent, no retry) or
    ``PermanentError`` (maybe sent: never sent again; or no such notification).
    """
    key = _claim_key(notification_id)
    with transaction.atomic():
        notification = Notification.objects.select_for_update().filter(id=notification_id).first()
        if notification is None:
            raise PermanentError(f"no notification {notification_id}")
        if notification.status == NotificationStatus.SENT:
            logger.info("notification %s was sent by an earlier run; skipped", notification_id)
            return _result(notification)
        if notification.status == NotificationStatus.UNKNOWN:
            raise PermanentError(
                f"notification {notification_id} may have been sent already "
                f"({notification.error}); not sent again"
            )
        failure: PermanentError | None = None
        try:
            path, provider = provider_load(channel=notification.channel)
        except ImproperlyConfigured as exc:  # before the claim: nothing was sent
            notification.status, notification.error = NotificationStatus.FAILED, str(exc)
            failure = PermanentError(str(exc))
        else:
            if effect_claim(key=key):
                notification.status = NotificationStatus.SENDING
                notification.attempts += 1
                notification.provider = path
            else:
                notification.status = NotificationStatus.UNKNOWN
                notification.error = (
                    "an earlier run claimed the send and recorded no outcome (its worker "
                    "stopped mid-send): the provider may have it; not sent again"
                )
                failure = PermanentError(f"notification {notification_id}: {notification.error}")
        notification.save(update_fields=["status", "error", "attempts", "provider", "updated_at"])
    # Committed: the claim is taken, whatever happens to this process from here on.
    if failure is not None:
        raise failure
    try:
        message_id = provider.send(
            to=notification.to,
            body=notification.body,
            title=notification.title or None,
            data=notification.data,
            idempotency_key=key,
        )
    except (ProviderUnavailable, ProviderRejected) as exc:
        # The provider's answer proves nothing was sent: give the claim back for a retry (or for
        # an operator's replay once the cause, a bad number or credentials, is fixed).
        retrying = isinstance(exc, ProviderUnavailable)
        with transaction.atomic():
            effect_release(key=key)
            _record(
                notification_id,
                status=NotificationStatus.RETRYING if retrying else NotificationStatus.FAILED,
                error=str(exc),
            )
        raise
    except Exception as exc:
        # Anything else (no answer, a bug in the provider) may have come after the send.
        _record(
            notification_id, status=NotificationStatus.UNKNOWN, error=f"{type(exc).__name__}: {exc}"
        )
        if isinstance(exc, ProviderOutcomeUnknown):
            raise
        raise ProviderOutcomeUnknown(f"{type(exc).__name__}: {exc}") from exc
    _record(
        notification_id,
        status=NotificationStatus.SENT,
        provider_message_id=message_id,
        error="",
        sent_at=timezone.now(),
    )
    logger.info("notification %s sent: %s %s", notification_id, path, message_id)
    return {"notification_id": notification_id, "status": "sent", "provider_message_id": message_id}


def notification_give_up(*, notification_id: int, error: str) -> None:
    """Record that retries ran out while the provider stayed unavailable: it was not sent."""
    Notification.objects.filter(id=notification_id, status=NotificationStatus.RETRYING).update(
        status=NotificationStatus.FAILED, error=error, updated_at=timezone.now()
    )
