"""How a notification leaves: one provider per channel, chosen in settings (``conf.py``).

A provider is any class with a ``send`` method of the shape of ``Provider`` below, built with no
arguments (it reads its own settings). What it raises tells the job what to do next:

- ``ProviderUnavailable``: not sent this time (no connection, 429, 5xx); retried with backoff,
  or after the provider's Retry-After;
- ``ProviderRejected``: not sent, and sending again cannot help (4xx); no retry;
- ``ProviderOutcomeUnknown``: the request may have reached the provider but no answer came;
  not retried, since the notification could then arrive twice.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import uuid
from typing import Any, Protocol

import httpx
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from django.utils.module_loading import import_string

from app.errors import PermanentError, TransientError
from app.retry_after import retry_after_seconds
from tasks.notifications import conf

logger = logging.getLogger(__name__)


class Provider(Protocol):
    def send(
        self,
        *,
        to: str,
        body: str,
        title: str | None = None,
        data: dict[str, str] | None = None,
        idempotency_key: str,
    ) -> str:
        """Hand the message to the provider; return the provider's id for it.

        ``idempotency_key`` is the same for every attempt at one notification: pass it on where
        the provider's API deduplicates by a key of the caller's.
        """
        ...


class ProviderUnavailable(TransientError):
    """The provider did not take the message, for now: it was not sent."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        #: Seconds to wait before the next try, or None for the job's backoff. Read a header with
        #: ``app.retry_after.retry_after_seconds(..., cap=conf.RETRY_AFTER_MAX)``; a number from
        #: elsewhere is held to the same bounds here (NaN is None).
        if retry_after is not None and retry_after == retry_after:
            retry_after = min(max(float(retry_after), 0.0), float(conf.RETRY_AFTER_MAX))
        else:
            retry_after = None
        self.retry_after = retry_after


class ProviderRejected(PermanentError):
    """The provider refused the message (a bad number, bad credentials): it was not sent."""


class ProviderOutcomeUnknown(PermanentError):
    """The request may have reached the provider, and no answer says whether it was sent."""


def provider_load(*, channel: str) -> tuple[str, Provider]:
    """The dotted path and an instance of ``channel``'s provider, as settings name it."""
    path = conf.providers().get(channel)
    if path is None:
        raise ImproperlyConfigured(f"no notification provider for channel {channel!r}")
    try:
        provider: Provider = import_string(path)()
    except ImportError as exc:
        raise ImproperlyConfigured(f"notification provider {path!r}: {exc}") from exc
    return path, provider


class Console:
    """For development: logs the message instead of sending it. The default when no provider's
    credentials are set, so a fresh checkout never texts anyone."""

    def send(
        self,
        *,
        to: str,
        body: str,
        title: str | None = None,
        data: dict[str, str] | None = None,
        idempotency_key: str,
    ) -> str:
        message_id = f"console-{uuid.uuid4().hex}"
        logger.info(
            "notification %s (not sent, console provider) to %s: title=%r body=%r data=%r",
            message_id, to, title, body, data,
        )  # fmt: skip
        return message_id


# --- HTTP ----------------------------------------------------------------------------------------

_client: httpx.Client | None = None
_client_key: tuple[int, float] = (0, 0.0)
_client_lock = threading.Lock()


def http_client() -> httpx.Client:
    """The process's pooled client: connections and TLS sessions are reused across sends and
    threads. One per process, made on first use, so a client made before a fork (the prefork
    pool) is never shared with the children; made again if the timeout setting changes. Every
    wait is bounded (``conf.http_timeout``): the threads pool enforces no time limit."""
    global _client, _client_key
    key = (os.getpid(), conf.http_timeout())
    with _client_lock:
        if _client is None or _client_key != key:
            _client = httpx.Client(timeout=httpx.Timeout(key[1]), follow_redirects=False)
            _client_key = key
        return _client


#: Transport errors raised before any byte of the request left: the message was not sent.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


# --- Twilio Programmable Messaging ----------------------------------------------------------------


def twilio_request_build(
    *, client: httpx.Client, settings: conf.TwilioSettings, to: str, body: str
) -> httpx.Request:
    """The request that creates a Message: a form POST to the account's Messages resource, with
    HTTP basic auth (AccountSid:AuthToken). ``client.build_request`` carries its timeouts."""
    if not (settings.account_sid and settings.auth_token):
        raise ProviderRejected(
            "Twilio is not configured: set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN"
        )
    form = {"To": to, "Body": body}
    if settings.messaging_service_sid:
        form["MessagingServiceSid"] = settings.messaging_service_sid
    elif settings.sender:
        form["From"] = settings.sender
    else:
        raise ProviderRejected(
            "Twilio has no sender: set TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID"
        )
    credentials = f"{settings.account_sid}:{settings.auth_token}".encode()
    return client.build_request(
        "POST",
        f"{settings.api_base}/2010-04-01/Accounts/{settings.account_sid}/Messages.json",
        data=form,
        headers={
            "Authorization": "Basic " + base64.b64encode(credentials).decode(),
            "Accept": "application/json",
        },
    )


def twilio_error_describe(*, response: httpx.Response) -> str:
    """Twilio's error code and message (``{"code": 21211, "message": ...}``), or the status."""
    try:
        payload: Any = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict) and payload.get("code") is not None:
        return f"{payload['code']} {payload.get('message') or ''}".strip()
    return f"HTTP {response.status_code} {response.text[:200]!r}"


def twilio_answer_read(*, response: httpx.Response) -> str:
    """The new Message's sid from a 201, or the exception that says what to do next."""
    status = response.status_code
    if 200 <= status < 300:
        try:
            sid = response.json().get("sid")
        except (ValueError, AttributeError):
            sid = None
        if not isinstance(sid, str) or not sid:
            # Twilio answered success: the message was most likely created. Not retried.
            raise ProviderOutcomeUnknown(f"Twilio answered {status} without a message sid")
        return sid
    error = f"Twilio {status}: {twilio_error_describe(response=response)}"
    if status == 429:
        retry_after = retry_after_seconds(
            value=response.headers.get("Retry-After"),
            now=timezone.now(),
            cap=conf.RETRY_AFTER_MAX,
        )
        raise ProviderUnavailable(error, retry_after=retry_after)
    if status >= 500:
        raise ProviderUnavailable(error)
    raise ProviderRejected(error)  # 4xx (and any redirect): sending again cannot help


class TwilioSms:
    """SMS through Twilio's Programmable Messaging API (``POST /2010-04-01/Accounts/{sid}/
    Messages.json``). Settings: TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_FROM or
    TWILIO_MESSAGING_SERVICE_SID, TWILIO_API_BASE.

    Twilio's Messages resource documents no idempotency key, so ``idempotency_key`` is not sent:
    the family's claim (services.py) is what keeps a notification from going out twice.
    """

    def send(
        self,
        *,
        to: str,
        body: str,
        title: str | None = None,
        data: dict[str, str] | None = None,
        idempotency_key: str,
    ) -> str:
        client = http_client()
        try:
            request = twilio_request_build(client=client, settings=conf.twilio(), to=to, body=body)
        except httpx.InvalidURL as exc:
            raise ProviderRejected(f"TWILIO_API_BASE is not a valid URL: {exc}") from exc
        try:
            response = client.send(request)
        except NOT_SENT as exc:
            raise ProviderUnavailable(f"Twilio unreachable: {type(exc).__name__}: {exc}") from exc
        except httpx.UnsupportedProtocol as exc:
            raise ProviderRejected(f"TWILIO_API_BASE is not an http(s) URL: {exc}") from exc
        except httpx.HTTPError as exc:
            raise ProviderOutcomeUnknown(
                f"no answer from Twilio after the request was sent: {type(exc).__name__}: {exc}"
            ) from exc
        return twilio_answer_read(response=response)
