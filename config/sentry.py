"""Sentry, with its Django and Celery integrations when SENTRY_DSN is set; else not at all."""

from __future__ import annotations

import sentry_sdk
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.django import DjangoIntegration


def init_sentry(*, dsn: str, environment: str, traces_sample_rate: float) -> bool:
    """Start Sentry if a DSN is configured. Returns whether it was started."""
    if not dsn:
        return False
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        traces_sample_rate=traces_sample_rate,
        # Job arguments may hold personal data; send ids and context, not user payloads.
        send_default_pii=False,
        integrations=[
            DjangoIntegration(),
            # Beat schedules show up as Sentry cron monitors; errors carry the task context.
            CeleryIntegration(monitor_beat_tasks=True),
        ],
    )
    return True
