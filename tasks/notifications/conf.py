"""The notifications family's settings, read through django.conf.settings when used (so a test's
settings override applies): config/settings.py fills them from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

CONSOLE = "tasks.notifications.providers.Console"
TWILIO_SMS = "tasks.notifications.providers.TwilioSms"
TWILIO_API_BASE = "https://api.twilio.com"

#: Longest wait honoured from a provider's Retry-After, in seconds. A retry is a message held
#: unacknowledged by a worker until due, which RabbitMQ's consumer_timeout (30 min) bounds.
RETRY_AFTER_MAX: float = getattr(settings, "NOTIFICATIONS_RETRY_AFTER_MAX", 300)


def providers() -> dict[str, str]:
    """Channel -> dotted path of its provider class. SMS default to Twilio once it has an account
    SID, else to the console provider, so a fresh checkout sends nothing anywhere."""
    defaults = {"sms": TWILIO_SMS if twilio().account_sid else CONSOLE, "push": CONSOLE}
    return {**defaults, **getattr(settings, "NOTIFICATIONS_PROVIDERS", {})}


def http_timeout() -> float:
    """Seconds to connect and seconds to wait for an answer: the threads pool has no time limit."""
    return float(getattr(settings, "NOTIFICATIONS_HTTP_TIMEOUT", 10))


@dataclass(frozen=True)
class TwilioSettings:
    account_sid: str
    auth_token: str
    sender: str  # From: a Twilio number or an alphanumeric sender id
    messaging_service_sid: str
    api_base: str


def twilio() -> TwilioSettings:
    return TwilioSettings(
        account_sid=getattr(settings, "TWILIO_ACCOUNT_SID", ""),
        auth_token=getattr(settings, "TWILIO_AUTH_TOKEN", ""),
        sender=getattr(settings, "TWILIO_FROM", ""),
        messaging_service_sid=getattr(settings, "TWILIO_MESSAGING_SERVICE_SID", ""),
        api_base=(getattr(settings, "TWILIO_API_BASE", "") or TWILIO_API_BASE).rstrip("/"),
    )
