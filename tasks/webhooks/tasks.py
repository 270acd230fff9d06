"""Webhook jobs: ``tasks.webhooks.deliver``, on the ``api`` queue (config/queues.py routes
``tasks.webhooks.*`` there). Enqueue it through ``services.webhook_send``."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from app.errors import PermanentError, TransientError
from tasks.webhooks import conf
from tasks.webhooks.models import DeliveryStatus
from tasks.webhooks.services import delivery_attempt, delivery_give_up


@shared_task(bind=True, tracked=True, max_retries=conf.MAX_RETRIES)
def deliver(self: Task, delivery_id: int) -> dict[str, Any]:
    """One attempt at a delivery; retried with the base job's backoff, or after the receiver's
    Retry-After. A delivery that fails for good ends the job failed: dead-lettered, and a replay
    of it sends the delivery again. A job with nothing to do (its delivery ended already, or is
    another job's) succeeds, doing nothing."""
    outcome = delivery_attempt(delivery_id=delivery_id, job_id=self.request.id)
    if outcome.skipped:
        return outcome.summary()
    if outcome.retry:
        if self.request.retries >= self.max_retries:
            error = f"gave up after {outcome.attempt} attempts; last: {outcome.error}"
            delivery_give_up(delivery_id=delivery_id, error=error)
            raise PermanentError(error)
        countdown = outcome.retry_after
        if countdown is None:
            countdown = self.backoff(self.request.retries)
        raise self.retry(exc=TransientError(outcome.error), countdown=countdown)
    if outcome.status == DeliveryStatus.FAILED:
        raise PermanentError(outcome.error)
    return outcome.summary()
