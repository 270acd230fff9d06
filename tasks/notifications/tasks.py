"""The notifications job: a thin entry point that calls ``services.py``. Celery names it
``tasks.notifications.deliver``; config/queues.py routes ``tasks.notifications.*`` to ``email``."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from app.errors import PermanentError
from tasks.notifications.providers import ProviderUnavailable
from tasks.notifications.services import notification_deliver, notification_give_up


@shared_task(bind=True, tracked=True)
def deliver(self: Task, notification_id: int) -> dict[str, Any]:
    """Send one notification (enqueue it with ``services.notification_send``). A provider that
    is unavailable is tried again with the base job's backoff, or after its Retry-After (capped,
    ``conf.RETRY_AFTER_MAX``); a refusal, or an outcome that cannot be known, is final."""
    try:
        return notification_deliver(notification_id=notification_id)
    except ProviderUnavailable as exc:
        if self.max_retries is not None and self.request.retries >= self.max_retries:
            error = f"gave up after {self.request.retries + 1} attempts: {exc}"
            notification_give_up(notification_id=notification_id, error=error)
            raise PermanentError(error) from exc
        countdown = exc.retry_after  # bounded by ProviderUnavailable
        if countdown is None:
            countdown = self.backoff(self.request.retries)
        raise self.retry(exc=exc, countdown=countdown) from exc
