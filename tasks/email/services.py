"""One templated email: build it, check it, send it once.

A template ``NAME`` is three files under ``templates/email/``: ``NAME.subject.txt``,
``NAME.txt`` and, optionally, ``NAME.html`` (which extends ``email/base.html``, the layout to
restyle). Any family or the project can add templates in its own ``templates/email/``.
"""

from __future__ import annotations

import logging
import mimetypes
import posixpath
import smtplib
from collections.abc import Sequence
from dataclasses import dataclass
from email import encoders
from email.mime.base import MIMEBase
from email.utils import getaddresses, parseaddr
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import default_storage
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import sanitize_address
from django.core.validators import validate_email
from django.db import transaction
from django.template import Context, TemplateDoesNotExist
from django.template.loader import get_template

from app.enqueue import job_enqueue
from app.errors import PermanentError, TransientError
from app.idempotency import effect_claim, effect_release
from app.models import EffectClaim
from tasks.email import conf
from tasks.email.smtp import HookedBackend, MessageAbandoned

logger = logging.getLogger(__name__)


class EmailInvalid(ValueError):
    """The email cannot be sent as asked (a bad address, a header with a line break, an
    attachment outside the storage): refused before anything is enqueued or sent."""


def address_check(address: str) -> str:
    """``address`` if it is one valid address (``a@example.com`` or ``Name <a@example.com>``)."""
    if not isinstance(address, str) or any(ord(c) < 32 or ord(c) == 127 for c in address):
        raise EmailInvalid(f"address {address!r} contains a line break or control character")
    parsed = getaddresses([address])
    if len(parsed) != 1:
        raise EmailInvalid(f"{address!r} is not one address but {len(parsed)}")
    try:
        validate_email(parsed[0][1])
        # What sending does. Python's header parser raises more than ValueError on some
        # malformed names (AttributeError, IndexError): any exception means "not sendable".
        sanitize_address(address, "utf-8")
    except Exception:
        raise EmailInvalid(f"{address!r} is not a valid email address") from None
    return address


def address_key(address: str) -> str:
    """The bare address, lower case: ``Ann <A@x.com>`` and ``a@x.com`` are one recipient."""
    return parseaddr(address)[1].lower()


def attachment_read(*, path: str) -> MIMEBase:
    """A file of the default storage as a MIME part, byte for byte (base64, even for text: a
    text part's line endings would be rewritten on the way). Paths are storage names, never
    filesystem paths: one that leaves the storage is refused."""
    if not path or path.endswith("/"):
        raise EmailInvalid(f"attachment {path!r} is not a file name")
    try:
        size = default_storage.size(path)
    except (SuspiciousFileOperation, ValueError):
        raise EmailInvalid(f"attachment {path!r} is outside the storage") from None
    except OSError:
        raise EmailInvalid(f"attachment {path!r} does not exist in the storage") from None
    if size > conf.MAX_ATTACHMENT_BYTES:
        raise EmailInvalid(
            f"attachment {path!r} has {size} bytes, more than {conf.MAX_ATTACHMENT_BYTES}"
        )
    with default_storage.open(path, "rb") as file:
        content = file.read()
    name = posixpath.basename(path)
    maintype, subtype = (mimetypes.guess_type(name)[0] or "application/octet-stream").split("/")
    part = MIMEBase(maintype, subtype)
    part.set_payload(content)
    encoders.encode_base64(part)
    part.add_header("Content-Disposition", "attachment", filename=name)
    return part


def _render(name: str, context: dict[str, Any], *, required: bool) -> str | None:
    """The template rendered; HTML-escaped only if it is HTML: a subject or a text body with
    ``&#x27;`` for every apostrophe is what autoescaping does to text."""
    try:
        template = get_template(name)
        if name.endswith(".html"):
            return template.render(context)
        return template.template.render(Context(context, autoescape=False))  # type: ignore[attr-defined]
    except TemplateDoesNotExist:
        if required:
            raise EmailInvalid(f"no template {name!r}") from None
        return None


def email_build(
    *,
    template: str,
    to: Sequence[str],
    context: dict[str, Any] | None = None,
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    reply_to: Sequence[str] = (),
    attachments: Sequence[str] = (),
    from_email: str | None = None,
) -> EmailMultiAlternatives:
    """The message, rendered and checked; raises EmailInvalid naming what is wrong."""
    if not to:
        raise EmailInvalid("an email needs at least one 'to' address")
    for address in [*to, *cc, *bcc, *reply_to, *([from_email] if from_email else [])]:
        address_check(address)
    if "/" in template.replace("\\", "/").strip("/") or template.startswith("."):
        raise EmailInvalid(f"template {template!r} must be a name, not a path")
    context = context or {}
    subject = (_render(f"email/{template}.subject.txt", context, required=True) or "").strip()
    if "\n" in subject or "\r" in subject:
        raise EmailInvalid(f"the subject of {template!r} contains a line break: {subject!r}")
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in subject):
        raise EmailInvalid(f"the subject of {template!r} contains a control character: {subject!r}")
    text = _render(f"email/{template}.txt", context, required=True) or ""
    html = _render(f"email/{template}.html", context, required=False)
    message = EmailMultiAlternatives(
        subject=subject,
        body=text,
        from_email=from_email,
        to=list(to),
        cc=list(cc),
        bcc=list(bcc),
        reply_to=list(reply_to),
    )
    if html is not None:
        message.attach_alternative(html, "text/html")
    for path in attachments:
        message.attach(attachment_read(path=path))
    return message


def email_send(
    *,
    template: str,
    to: Sequence[str],
    context: dict[str, Any] | None = None,
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    reply_to: Sequence[str] = (),
    attachments: Sequence[str] = (),
    from_email: str | None = None,
    owner: User | None = None,
) -> str:
    """Enqueue one email (sent by the ``tasks.email.send`` job); return the job id.

    The email is built here once, so a bad address, template or attachment is an EmailInvalid
    now, in the caller's request, and nothing is enqueued. Enqueued with the caller's
    transaction: if it rolls back, nothing is sent.
    """
    spec: dict[str, Any] = {
        "template": template,
        "to": list(to),
        "context": context or {},
        "cc": list(cc),
        "bcc": list(bcc),
        "reply_to": list(reply_to),
        "attachments": list(attachments),
        "from_email": from_email,
    }
    email_build(**spec)
    with transaction.atomic():
        return job_enqueue("tasks.email.send", kwargs=spec, owner=owner)


@dataclass(frozen=True)
class SmtpOutcome:
    """What a failure while sending means.

    ``kind`` is one of:
    - ``rejected``: 5xx for this recipient or this message; recorded, never retried;
    - ``deferred``: 4xx for this recipient; retried later, the connection is fine;
    - ``transient``: the connection failed or timed out; retried with backoff;
    - ``abort``: nothing can be sent until someone fixes the configuration (credentials
      refused, the sender refused, STARTTLS missing); the whole send stops;
    - ``invalid``: this message cannot be sent as it is (an address Django cannot encode);
      permanent for it, the others go on.
    """

    kind: str
    message: str


def smtp_outcome(exc: BaseException) -> SmtpOutcome:
    """Classify an exception raised while sending (smtplib's, the socket's, Django's, or an
    email service provider's through django-anymail)."""
    provider = _provider_outcome(exc)
    if provider is not None:
        return provider
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return SmtpOutcome("abort", f"SMTP authentication failed: {exc.smtp_code} {_text(exc)}")
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, reason = next(iter(exc.recipients.values()), (451, b"refused"))
        kind = "rejected" if 500 <= code < 600 else "deferred"
        return SmtpOutcome(kind, f"{code} {_decode(reason)}")
    if isinstance(exc, smtplib.SMTPResponseException):
        permanent = 500 <= exc.smtp_code < 600
        reply = f"{exc.smtp_code} {_text(exc)}"
        if isinstance(exc, smtplib.SMTPDataError):  # this message's content or size
            return SmtpOutcome("rejected" if permanent else "deferred", reply)
        # The sender refused, HELO refused...: the same for every message of the send.
        return SmtpOutcome("abort" if permanent else "transient", f"refused: {reply}")
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return SmtpOutcome("abort", f"the SMTP server does not support what is configured: {exc}")
    if isinstance(exc, OSError):  # SMTPServerDisconnected, timeouts, refused connections, TLS
        return SmtpOutcome("transient", f"{type(exc).__name__}: {exc}")
    return SmtpOutcome("invalid", f"{type(exc).__name__}: {exc}")


def _provider_outcome(exc: BaseException) -> SmtpOutcome | None:
    """A django-anymail error, by the HTTP status of the provider's answer: 401 and 403 stop
    the send (credentials); 429 and 5xx are transient; another 4xx refuses this message. With
    no answer (the API not reached, a timeout), transient. None for anything else.

    Without this, a provider's refusal of the API key was retried as a network error, and an
    Amazon SES throttling (boto's errors are no OSError) refused every recipient for good."""
    try:
        from anymail.exceptions import (  # type: ignore[import-untyped]
            AnymailError,
            AnymailRecipientsRefused,
        )
    except ImportError:  # SMTP only: django-anymail is not installed
        return None
    if not isinstance(exc, AnymailError):
        return None
    text = " ".join(str(exc).split())[:500] or type(exc).__name__
    if isinstance(exc, AnymailRecipientsRefused):
        return SmtpOutcome("rejected", text)
    response = exc.response if isinstance(exc.response, dict) else {}  # boto's (Amazon SES)
    if "Throttl" in str(response.get("Error", {}).get("Code", "")):  # SES v1 says 400
        return SmtpOutcome("transient", text)
    status = exc.status_code or response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if not isinstance(status, int):
        if isinstance(exc, ValueError | TypeError):  # an address or feature it cannot send
            return SmtpOutcome("invalid", text)
        return SmtpOutcome("transient", text)
    if status in (401, 403):
        return SmtpOutcome("abort", f"the provider refused the credentials: {text}")
    if status == 429 or status >= 500:
        return SmtpOutcome("transient", text)
    return SmtpOutcome("rejected", text)


def _text(exc: smtplib.SMTPResponseException) -> str:
    return _decode(exc.smtp_error)


def _decode(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def connection_open() -> BaseEmailBackend:
    """An open connection of the configured backend. For Django's SMTP backend, its subclass
    with the hook before each message's final line (tasks/email/smtp.py), where sends are
    claimed; other backends (an email service provider's API) are claimed before the call."""
    smtp = settings.EMAIL_BACKEND == "django.core.mail.backends.smtp.EmailBackend"
    connection = get_connection(
        "tasks.email.smtp.HookedBackend" if smtp else None, fail_silently=False
    )
    connection.open()
    return connection


def _close(connection: BaseEmailBackend) -> None:
    try:
        connection.close()
    except Exception:  # the connection is gone already; closing it can fail too
        logger.debug("SMTP connection close failed", exc_info=True)


#: A send whose outcome nobody knows: claimed, handed over, and then the worker died or the
#: connection broke before the server's answer. Never resent: it would be a second copy.
OUTCOME_UNKNOWN = "outcome unknown: the message was handed over but no answer came; not resent"


def email_deliver(*, job_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Send one email built from ``spec`` (``email_send``'s arguments), at most once per job.

    Over SMTP the send is claimed right before the message's final line: a job killed before
    that sent nothing and its redelivery sends; after it, the server most likely has the
    message, and the redelivery fails the job as "outcome unknown" rather than send a second
    copy. A refusal or deferral proves nothing was taken: the claim is given back for the retry.
    """
    try:
        message = email_build(**spec)
    except EmailInvalid as exc:
        raise PermanentError(str(exc)) from None
    key = f"email:{job_id}"
    if EffectClaim.objects.filter(key=key).exists():
        raise PermanentError(OUTCOME_UNKNOWN)
    claimed = False

    def claim() -> bool:
        nonlocal claimed
        with transaction.atomic():
            claimed = effect_claim(key=key)
        return claimed

    connection: BaseEmailBackend | None = None
    try:
        connection = connection_open()
        if isinstance(connection, HookedBackend):
            connection.before_end_set(claim)
        elif not claim():
            raise PermanentError(OUTCOME_UNKNOWN)
        message.connection = connection
        message.send()
        refused = getattr(getattr(connection, "connection", None), "refused", {})
    except (PermanentError, MessageAbandoned) as exc:
        raise PermanentError(OUTCOME_UNKNOWN) from exc
    except Exception as exc:
        outcome = smtp_outcome(exc)
        if claimed and outcome.kind == "transient" and isinstance(connection, HookedBackend):
            raise PermanentError(f"{OUTCOME_UNKNOWN} ({outcome.message})") from exc
        if claimed:
            effect_release(key=key)  # refused or deferred: the server did not take it
        if outcome.kind == "abort":
            logger.error("email not sent: %s", outcome.message)
        if outcome.kind in ("abort", "rejected", "invalid"):
            raise PermanentError(f"not sent: {outcome.message}") from exc
        raise TransientError(outcome.message) from exc
    finally:
        if connection is not None:
            _close(connection)
    return {
        "sent": True,
        "to": spec["to"],
        "subject": message.subject,
        **({"refused": refused} if refused else {}),
    }
