"""How many jobs ran, failed and waited, counted from the job records: the jobs page's history
and the alert check's failure rates. The records are the history: it survives restarts of any
process and lasts as long as the records (``JOBS_RETENTION_DAYS``).

Every count is over the jobs *enqueued* in a time range, by their status now, because that is what
JobRecord's indexes serve (``enqueued_at``, and ``status, enqueued_at``). Counting by when jobs
ended would need an index on ``finished_at``: one more index entry for every tracked job, written
by the worker on the hot path (``make bench``, ``tracked_drain_ratio_vs_bare``), for a page that
staff open now and then. So "the last hour" means the jobs enqueued in the last hour, whatever they
became; a job is counted as failing once it has failed, in the slice of time it was enqueued in.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import (
    BooleanField,
    Count,
    DateTimeField,
    ExpressionWrapper,
    F,
    Func,
    Q,
    QuerySet,
)
from django.db.models.sql.compiler import SQLCompiler

from app.models import JobRecord, JobStatus

#: Jobs that ran to an outcome; a cancelled job is neither a success nor a failure.
ENDED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.DEAD)
FAILING = (JobStatus.FAILED, JobStatus.DEAD)
#: Not ended yet: waiting in a queue, running, or waiting for a retry.
OPEN = (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.RETRYING)

HISTORY_SPAN = timedelta(days=1)
BUCKET = timedelta(minutes=15)
RECENT_SPAN = timedelta(hours=1)  # a whole number of buckets


@dataclass(frozen=True)
class Outcomes:
    """How the jobs of one task (or all of them) that ended came out."""

    ended: int = 0
    failed: int = 0  # failed or dead

    @property
    def percent_failed(self) -> float:
        return 100.0 * self.failed / self.ended if self.ended else 0.0

    def __add__(self, other: Outcomes) -> Outcomes:
        return Outcomes(ended=self.ended + other.ended, failed=self.failed + other.failed)


def outcomes_by_task(*, since: datetime) -> dict[str, Outcomes]:
    """Per task, the jobs enqueued since ``since`` that have ended, and how many of them failed.

    Read through the (status, enqueued_at) index: one range per ended status."""
    rows = (
        JobRecord.objects.filter(status__in=ENDED, enqueued_at__gte=since)
        .values_list("task_name", "status")
        .annotate(n=Count("*"))
        .order_by()  # Meta.ordering would add enqueued_at to the GROUP BY
    )
    outcomes: dict[str, Outcomes] = defaultdict(Outcomes)
    for task_name, status, n in rows:
        outcomes[task_name] += Outcomes(ended=n, failed=n if status in FAILING else 0)
    return dict(outcomes)


class TimeBucket(Func):
    """The start of the slice of ``size`` after ``origin`` that a datetime column falls in.

    In SQL, so that a day of records is grouped by the database, not sent to Python. On
    PostgreSQL it is ``date_bin`` (14+, as Django 5.2 requires), the cheapest per row of the ways
    tried: ``EXTRACT(EPOCH ...)`` computes in numeric, and was slower."""

    output_field = DateTimeField()
    arity = 1

    def __init__(self, expression: Any, *, origin: datetime, size: timedelta) -> None:
        super().__init__(expression)
        self.origin = origin
        self.seconds = size.total_seconds()

    def as_sql(  # type: ignore[override]
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra: Any
    ) -> tuple[str, list[Any]]:
        # SQLite keeps datetimes as ISO text in UTC; julianday() reads it, in days. The result
        # is whole seconds: the caller rounds to the nearest slice.
        column, params = compiler.compile(self.source_expressions[0])
        origin = connection.ops.adapt_datetimefield_value(self.origin)
        days = self.seconds / 86400
        sql = (
            f"datetime(julianday(%s) + CAST((julianday({column}) - julianday(%s)) / %s"
            " AS INTEGER) * %s)"
        )
        return sql, [origin, *params, origin, days, days]

    def as_postgresql(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra: Any
    ) -> tuple[str, list[Any]]:
        column, params = compiler.compile(self.source_expressions[0])
        return f"date_bin(%s, {column}, %s)", [
            timedelta(seconds=self.seconds),
            *params,
            self.origin,
        ]


@dataclass
class Bucket:
    """The jobs enqueued in one slice of time, by what they became."""

    start: datetime
    succeeded: int = 0
    failed: int = 0  # failed or dead
    other: int = 0  # still open, or cancelled

    @property
    def total(self) -> int:
        return self.succeeded + self.failed + self.other


@dataclass
class TaskCounts:
    task_name: str
    by_status: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def failed(self) -> int:
        return sum(self.by_status.get(s, 0) for s in FAILING)


@dataclass
class Counts:
    """The jobs enqueued in a span, by status and by task."""

    by_status: dict[str, int]
    by_task: list[TaskCounts]  # the busiest first

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


@dataclass
class History:
    since: datetime
    until: datetime
    buckets: list[Bucket]
    recent: Counts  # the last RECENT_SPAN
    whole: Counts  # all of HISTORY_SPAN


def history_read(*, records: QuerySet[JobRecord], now: datetime) -> History:
    """Counts and buckets of ``records`` (the jobs a user may see) enqueued in the day before
    ``now``; the last hour is the last few buckets, so one pass gives both spans.

    Two grouped queries over the day's records: by (bucket, status) for the chart and the
    status counts, by (task, status, recent or not) for the task counts."""
    since = now - HISTORY_SPAN
    n_buckets = int(HISTORY_SPAN / BUCKET)
    recent_from = n_buckets - int(RECENT_SPAN / BUCKET)
    bucket = TimeBucket(F("enqueued_at"), origin=since, size=BUCKET)
    # Every status, named: with the range on enqueued_at, the (status, enqueued_at) index alone
    # answers the first query (an index-only scan), without reading the rows themselves.
    day = records.filter(status__in=JobStatus.values, enqueued_at__gte=since).order_by()
    buckets = [Bucket(start=since + i * BUCKET) for i in range(n_buckets)]
    recent_status: dict[str, int] = dict.fromkeys(JobStatus.values, 0)
    whole_status: dict[str, int] = dict.fromkeys(JobStatus.values, 0)
    for start, status, n in day.values_list(bucket, "status").annotate(n=Count("*")):
        # Clamped: a record stamped a moment after ``now`` (another process's clock).
        index = min(max(round((start - since) / BUCKET), 0), n_buckets - 1)
        slot = buckets[index]
        if status == JobStatus.SUCCEEDED:
            slot.succeeded += n
        elif status in FAILING:
            slot.failed += n
        else:
            slot.other += n
        whole_status[status] += n
        if index >= recent_from:
            recent_status[status] += n

    recent_start = since + recent_from * BUCKET
    recent_tasks: dict[str, TaskCounts] = {}
    whole_tasks: dict[str, TaskCounts] = {}
    is_recent = ExpressionWrapper(Q(enqueued_at__gte=recent_start), output_field=BooleanField())
    grouped = day.values_list("task_name", "status", is_recent).annotate(n=Count("*"))
    for task_name, status, recent, n in grouped:
        whole = whole_tasks.setdefault(task_name, TaskCounts(task_name))
        whole.by_status[status] = whole.by_status.get(status, 0) + n
        if recent:
            mine = recent_tasks.setdefault(task_name, TaskCounts(task_name))
            mine.by_status[status] = mine.by_status.get(status, 0) + n
    return History(
        since=since,
        until=now,
        buckets=buckets,
        recent=Counts(recent_status, _busiest(recent_tasks)),
        whole=Counts(whole_status, _busiest(whole_tasks)),
    )


def _busiest(tasks: dict[str, TaskCounts]) -> list[TaskCounts]:
    return sorted(tasks.values(), key=lambda t: (-t.total, t.task_name))
