"""Job records, the outbox and effect claims: what makes jobs visible, durable and idempotent.

Every query on these tables lives in ``app/records.py`` (tracking), ``app/outbox.py`` (relay) and
``app/idempotency.py`` (claims); views and commands call those functions.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class JobStatus(models.TextChoices):
    QUEUED = "queued"
    STARTED = "started"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # gave up, but its message was not dead-lettered (a task opted out)
    DEAD = "dead"  # gave up; its message waits in <queue>.dead for replay or purge
    CANCELLED = "cancelled"


#: A redelivered message of a job in one of these states is acknowledged and skipped.
FINAL_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED)


class JobRecord(models.Model):
    """One tracked job; its id is the Celery task id."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    task_name = models.CharField(max_length=200)
    queue = models.CharField(max_length=100)
    #: A short, safe summary of the arguments for people (the arguments themselves are in
    #: ``payload``, kept so that a dead job can be replayed).
    summary = models.CharField(max_length=200, blank=True)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)  # percent
    progress_message = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    #: NULL, not "", for no key: unique where set (Meta.constraints).
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    correlation_id = models.CharField(max_length=64, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, db_index=False
    )
    replay_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="replays",
        db_index=False,
    )
    enqueued_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-enqueued_at"]
        # A worker writes every index of this table for every tracked job, so there are no
        # LIKE copies (Django adds them to CharFields with db_index on PostgreSQL; nothing here
        # searches by prefix), and columns that most jobs leave empty are indexed where set.
        indexes = [
            models.Index(fields=["status", "enqueued_at"]),
            models.Index(fields=["task_name"], name="jobrecord_task_name"),
            models.Index(
                fields=["correlation_id"],
                name="jobrecord_correlation_id",
                condition=~Q(correlation_id=""),
            ),
            models.Index(
                fields=["owner"], name="jobrecord_owner", condition=Q(owner__isnull=False)
            ),
            models.Index(
                fields=["replay_of"],
                name="jobrecord_replay_of",
                condition=Q(replay_of__isnull=False),
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["idempotency_key"],
                name="jobrecord_idempotency_key",
                condition=Q(idempotency_key__isnull=False),
            )
        ]

    def __str__(self) -> str:
        return f"{self.task_name}[{self.id}] {self.status}"


class OutboxMessage(models.Model):
    """A message to publish, written in the transaction that decided to publish it."""

    task_id = models.UUIDField(unique=True)
    task_name = models.CharField(max_length=200)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    #: apply_async options: queue, countdown, headers (correlation id) ...
    options = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    #: Why this row cannot be published (not a broker outage); the relay skips it until cleared.
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["id"], name="outbox_pending", condition=models.Q(sent_at__isnull=True)
            ),
            models.Index(fields=["sent_at"], name="outbox_sent_at"),
        ]

    def __str__(self) -> str:
        return f"{self.task_name}[{self.task_id}] {'sent' if self.sent_at else 'pending'}"


class EffectClaim(models.Model):
    """Proof that an effect happened: claimed in the same transaction as the effect itself."""

    key = models.CharField(max_length=200, primary_key=True)
    task_id = models.CharField(max_length=64, blank=True)
    claimed_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.key
