"""The webhooks family's settings: set them in config/settings.py (or the environment there) to
change them; these are the defaults."""

from __future__ import annotations

from django.conf import settings

#: Seconds a request may take in all: connecting, sending and reading the answer (the URL guard's
#: deadline; also each socket operation's timeout). Standard Webhooks asks receivers to answer
#: fast (and do the work later), so a slow endpoint is a failed attempt, retried.
TIMEOUT: float = getattr(settings, "WEBHOOKS_TIMEOUT", 10.0)
#: Retries after the first attempt, with the base job's exponential backoff (1, 2, 4 ... s, up to
#: 10 min): 10 span about 17 minutes. More would need delays past RabbitMQ's consumer timeout.
MAX_RETRIES: int = getattr(settings, "WEBHOOKS_MAX_RETRIES", 10)
#: Most seconds a Retry-After header may ask for; a longer one is cut to this.
RETRY_AFTER_MAX: int = getattr(settings, "WEBHOOKS_RETRY_AFTER_MAX", 600)
#: How much of a receiver's answer the delivery log keeps.
RESPONSE_KEPT: int = getattr(settings, "WEBHOOKS_RESPONSE_KEPT", 1000)
USER_AGENT: str = getattr(settings, "WEBHOOKS_USER_AGENT", "webhooks (Standard Webhooks)")
