"""Job records, the outbox and effect claims: what makes jobs visible, durable and idempotent.

Every query on these tables lives in ``app/records.py`` (tracking), ``app/outbox.py`` (relay) and
``app/idempotency.py`` (claims); views and commands call those functions. The beat lease is
app/beat.py's.
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
            # /metrics (app/metrics.py) reads these two at every scrape, the alert check the
            # second. The first gets one entry per job, when it ends (a started record has no
            # finished_at yet): what lets a scrape count the jobs that ended lately without
            # reading all records. The second holds only jobs waiting in a queue: the web
            # request that enqueues writes it, a worker's start leaves it (make bench:
            # ``tracked_drain_ratio_vs_bare``).
            models.Index(
                fields=["finished_at"],
                name="jobrecord_finished_at",
                condition=Q(finished_at__isnull=False),
            ),
            models.Index(
                fields=["queue", "enqueued_at"],
                name="jobrecord_queued",
                condition=Q(status="queued"),
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


class RateSlot(models.Model):
    """When the next unit of a shared rate limit may start (app/ratelimit.py)."""

    key = models.CharField(max_length=200, primary_key=True)
    #: Unix time, in seconds, of the next free slot.
    next_at = models.FloatField(default=0.0)

    def __str__(self) -> str:
        return f"{self.key}: next at {self.next_at:.3f}"


class BatchMemberState(models.TextChoices):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Batch(models.Model):
    """Jobs started together, and the callback job enqueued once all of them ended
    (app/batches.py)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    callback = models.CharField(max_length=200)  # a task name
    callback_kwargs = models.JSONField(default=dict)
    size = models.PositiveIntegerField()
    #: Members not ended yet; the member whose end brings it to 0 enqueues the callback.
    remaining = models.PositiveIntegerField()
    callback_job_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "batches"

    def __str__(self) -> str:
        return f"batch {self.id}: {self.size - self.remaining} of {self.size} ended"


class BatchMember(models.Model):
    """One job of a batch; its id is the job's (Celery task) id."""

    job_id = models.UUIDField(primary_key=True)
    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="members")
    state = models.CharField(
        max_length=10, choices=BatchMemberState.choices, default=BatchMemberState.PENDING
    )

    def __str__(self) -> str:
        return f"{self.job_id} {self.state}"


class ScheduleSync(models.Model):
    """What ``manage.py sync_schedule`` last wrote to one periodic task of the code: a row that
    no longer matches it was edited in the admin (kept), a code entry that no longer matches it
    changed in the code (applied)."""

    name = models.CharField(max_length=200, primary_key=True)  # PeriodicTask.name
    #: SHA-256 of the row's schedule fields as last written or accepted by the sync.
    written = models.CharField(max_length=64)
    synced_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.name


class JobTally(models.Model):
    """How the tracked jobs of one task and queue that ended before ``JobTallyMark.folded_before``
    came out: the part of /metrics' job counters that must outlive the records (app/metrics.py).

    The counters are computed at scrape time, from records, and records are pruned: without
    this, pruning would make a counter go down, which Prometheus reads as a restart.
    """

    task_name = models.CharField(max_length=200)
    queue = models.CharField(max_length=100)
    succeeded = models.PositiveBigIntegerField(default=0)
    failed = models.PositiveBigIntegerField(default=0)  # failed or dead
    cancelled = models.PositiveBigIntegerField(default=0)
    #: Attempts beyond the first, of jobs that ended.
    retried = models.PositiveBigIntegerField(default=0)
    #: Run time of the succeeded jobs' last attempt: how many, their sum in seconds, and per
    #: bucket upper bound (``repr`` of app.metrics.RUNTIME_BUCKETS) how many took at most that.
    runtime_count = models.PositiveBigIntegerField(default=0)
    runtime_sum = models.FloatField(default=0.0)
    runtime_buckets = models.JSONField(default=dict)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["task_name", "queue"], name="jobtally_task_queue")
        ]

    def __str__(self) -> str:
        return f"{self.task_name} on {self.queue}: {self.succeeded} succeeded, {self.failed} failed"


class JobTallyMark(models.Model):
    """One row: the records that ended before ``folded_before`` are counted in ``JobTally``;
    the ones that ended since are counted from the records at each scrape."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    folded_before = models.DateTimeField()

    def __str__(self) -> str:
        return f"job records tallied up to {self.folded_before.isoformat()}"


class AlertState(models.Model):
    """One condition the alert check watches (app/alerts.py): whether it fires, since when, and
    what it measured last. In the database, not in a worker's memory, so that a check notifies
    on a change only, whichever worker runs it and however often workers restart."""

    #: "failure_rate", "failure_rate:<task>", "dead_letters:<queue>", "queue_age:<queue>", "outbox"
    key = models.CharField(max_length=300, primary_key=True)
    firing = models.BooleanField(default=False)
    #: When it started firing (kept after it resolves: the last episode's start).
    since = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    summary = models.CharField(max_length=500, blank=True)
    #: What the last check measured; a dead-letter queue's depth and when it last grew.
    figures = models.JSONField(default=dict)
    checked_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.key}: {'firing' if self.firing else 'ok'}"


class BeatLease(models.Model):
    """Which beat may send, on databases without advisory locks (app/beat.py's LeaseLock)."""

    name = models.CharField(max_length=50, primary_key=True)
    holder = models.CharField(max_length=200, blank=True)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name}: {self.holder or 'nobody'} until {self.expires_at}"
