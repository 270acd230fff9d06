"""What ``GET /metrics`` reports: the figures Flower lacks, in Prometheus' text format.

Everything is read when Prometheus scrapes, from RabbitMQ and the database; nothing is counted
in the workers, so a job pays nothing for it (``make bench``: ``tracked_drain_ratio_vs_bare``),
every web process answers the same, and a restart loses nothing. The price: job outcomes exist
for tracked jobs only, those with a job record. Flower's own ``/metrics`` counts every task from
its events (``flower_events_total``) while it runs.

Names and labels are those of the community's celery-exporter (danihodovic/celery-exporter,
``src/exporter.py``): ``celery_queue_length`` and ``celery_active_consumer_count`` by
``queue_name``; ``celery_task_succeeded_total``, ``celery_task_failed_total``,
``celery_task_retried_total``, ``celery_task_revoked_total`` and the ``celery_task_runtime``
histogram by ``name`` and ``queue_name``), so dashboards made for it (Grafana 17508, 17509)
work. Its ``hostname`` label is missing: a record does not say which worker ran the job. Its
``exception`` label on failures too: a record keeps the error as free text, and Sentry and the
logs say which exception it was. Figures it has no name for start with ``jobs_``.

Queues (RabbitMQ, over AMQP with the workers' own URL; no management plugin needed):

- depth and consumers of every queue and dead-letter queue: a passive ``queue.declare``;
- how long the oldest message of a dead-letter queue has been there: its head message, taken
  unacknowledged and given straight back (nothing consumes these queues), says when it was
  dead-lettered (``x-death``);
- how long the oldest job of a work queue has waited: from the job records (the oldest
  ``queued`` one, waiting since its eta when it was given one): the alert check's own measure,
  ``app.alerts.oldest_waiting``, so that Prometheus and the template's alerts agree.
  Reading the head message instead would take it from the workers for a moment, and count as a
  delivery (a quorum queue's delivery limit dead-letters a message delivered too often); and a
  Celery message does not carry its publishing time. RabbitMQ's management API
  (``head_message_timestamp``) would need the plugin, its credentials, and every publisher to set
  the message's ``timestamp`` property. What the records miss: untracked jobs, and tracked jobs
  sent with a plain ``delay()`` (they have no record until a worker starts them).

Job outcomes: counters must never go down, and records are pruned. Records that ended before a
mark (``JobTallyMark``) are added up once into ``JobTally`` rows; the ones that ended since are
counted at each scrape, which moves the mark to ``SETTLE`` ago. Both reads go through the index
on ``finished_at``, so a scrape reads the jobs of about a minute, however many records there are.
A record that ends later than ``SETTLE`` after its ``finished_at`` (a worker whose clock is that
far behind the web server's, a transaction held open that long) is never counted; a record
deleted by hand within ``SETTLE`` of its end makes its counter go down once (read as a reset).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import Error as DatabaseError
from django.db import connection, transaction
from django.db.models import (
    Case,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    IntegerField,
    Q,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Greatest
from django.utils import timezone
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from app.alerts import QueueState, oldest_waiting, queues_read
from app.models import JobRecord, JobStatus, JobTally, JobTallyMark, OutboxMessage
from app.outbox import BROKER_DOWN
from config import queues

logger = logging.getLogger(__name__)

#: Upper bounds, in seconds, of the run-time histogram's buckets: prometheus_client's default
#: ones (celery-exporter's too) and more up to the hard time limit, for exports and images.
#: Tallies keep counts by bound: a bound added later counts only the jobs that end after it.
RUNTIME_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
#: How long after its ``finished_at`` a record is taken to be visible (committed, from a worker
#: whose clock may run a little behind): only then is it added to the tally for good.
SETTLE = timedelta(seconds=60)

QUEUE_LABELS = ["queue_name"]
TASK_LABELS = ["name", "queue_name"]


# --- Job outcomes --------------------------------------------------------------------------------


@dataclass
class Outcomes:
    """How the jobs of one task and queue ended; adds up."""

    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    retried: int = 0
    runtime_count: int = 0
    runtime_sum: float = 0.0
    #: repr(bound) -> jobs that took at most that long (cumulative, as Prometheus' buckets).
    runtime_buckets: dict[str, int] = field(default_factory=dict)

    def add(self, other: Outcomes) -> None:
        self.succeeded += other.succeeded
        self.failed += other.failed
        self.cancelled += other.cancelled
        self.retried += other.retried
        self.runtime_count += other.runtime_count
        self.runtime_sum += other.runtime_sum
        for bound, n in other.runtime_buckets.items():
            self.runtime_buckets[bound] = self.runtime_buckets.get(bound, 0) + n

    @classmethod
    def of_tally(cls, tally: JobTally) -> Outcomes:
        return cls(
            succeeded=tally.succeeded,
            failed=tally.failed,
            cancelled=tally.cancelled,
            retried=tally.retried,
            runtime_count=tally.runtime_count,
            runtime_sum=tally.runtime_sum,
            runtime_buckets={str(k): int(v) for k, v in tally.runtime_buckets.items()},
        )


Key = tuple[str, str]  # (task name, queue)


def outcomes_ended(*, since: datetime, before: datetime | None = None) -> dict[Key, Outcomes]:
    """Per task and queue, how the records that ended from ``since`` (and before ``before``)
    came out. One query, through the ``finished_at`` index; rows are grouped by status and
    run-time bucket in the database (one CASE per record, which stops at the first bucket that
    fits, measured faster than one filtered count per bucket), and added up here."""
    runtime = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    bucket = Case(
        When(runtime__isnull=True, then=Value(-1)),  # never started (cancelled while queued)
        *(
            When(runtime__lte=timedelta(seconds=bound), then=Value(i))
            for i, bound in enumerate(RUNTIME_BUCKETS)
        ),
        default=Value(len(RUNTIME_BUCKETS)),  # over the last bound: +Inf only
        output_field=IntegerField(),
    )
    records = JobRecord.objects.filter(finished_at__gte=since)
    if before is not None:
        records = records.filter(finished_at__lt=before)
    rows = (
        records.alias(runtime=runtime)
        .annotate(bucket=bucket)
        .values("task_name", "queue", "status", "bucket")
        .annotate(n=Count("*"), retried=Sum(Greatest(F("attempts") - 1, 0)), took=Sum("runtime"))
        .order_by()
    )
    result: dict[Key, Outcomes] = defaultdict(Outcomes)
    per_bucket: dict[Key, list[int]] = defaultdict(lambda: [0] * len(RUNTIME_BUCKETS))
    for row in rows:
        outcomes = result[(row["task_name"], row["queue"])]
        n, status = row["n"], row["status"]
        outcomes.retried += row["retried"] or 0
        if status == JobStatus.SUCCEEDED:
            outcomes.succeeded += n
            if row["bucket"] >= 0:
                outcomes.runtime_count += n
                outcomes.runtime_sum += row["took"].total_seconds()
                if row["bucket"] < len(RUNTIME_BUCKETS):
                    per_bucket[(row["task_name"], row["queue"])][row["bucket"]] += n
        elif status in (JobStatus.FAILED, JobStatus.DEAD):
            outcomes.failed += n
        elif status == JobStatus.CANCELLED:
            outcomes.cancelled += n
    for key, outcomes in result.items():
        counts = per_bucket[key]
        outcomes.runtime_buckets = {
            repr(bound): sum(counts[: i + 1]) for i, bound in enumerate(RUNTIME_BUCKETS)
        }
    return dict(result)


def tally_fold(*, now: datetime) -> None:
    """Add the records that ended between the mark and ``SETTLE`` ago to the tally; move the
    mark there. Skipped while another scrape does it (the mark's row is locked): that one
    moves it. The first call only sets the mark: jobs are counted from then on."""
    JobTallyMark.objects.get_or_create(id=1, defaults={"folded_before": now})
    cut = now - SETTLE
    with transaction.atomic():
        mark = JobTallyMark.objects.select_for_update(skip_locked=True).filter(id=1).first()
        if mark is None or mark.folded_before >= cut:
            return
        for (task_name, queue), ended in outcomes_ended(
            since=mark.folded_before, before=cut
        ).items():
            tally, _ = JobTally.objects.get_or_create(task_name=task_name, queue=queue)
            total = Outcomes.of_tally(tally)
            total.add(ended)
            for name in ("succeeded", "failed", "cancelled", "retried", "runtime_count"):
                setattr(tally, name, getattr(total, name))
            tally.runtime_sum = total.runtime_sum
            tally.runtime_buckets = total.runtime_buckets
            tally.save()
        mark.folded_before = cut
        mark.save(update_fields=["folded_before"])


def outcomes_total(*, now: datetime) -> dict[Key, Outcomes]:
    """Per task and queue, every tracked job that ended since the first scrape: the tally, and
    the records that ended since its mark.

    Read in one snapshot: read apart, a fold committed in between could pair the old mark with
    the new tally (jobs counted twice) or the new mark with the old tally (jobs missing)."""
    tally_fold(now=now)
    with _snapshot():
        mark = JobTallyMark.objects.filter(id=1).first()
        if mark is None:  # deleted meanwhile: the next scrape starts again
            return {}
        totals: dict[Key, Outcomes] = defaultdict(Outcomes)
        for tally in JobTally.objects.all():
            totals[(tally.task_name, tally.queue)].add(Outcomes.of_tally(tally))
        for key, ended in outcomes_ended(since=mark.folded_before).items():
            totals[key].add(ended)
    return dict(totals)


@contextmanager
def _snapshot() -> Iterator[None]:
    """A transaction whose reads all see the database as it was at its first one.

    PostgreSQL's default (read committed) gives each statement its own snapshot; repeatable
    read gives the transaction one. SQLite's transactions are serializable already. Inside a
    caller's transaction the level is the caller's."""
    if connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


# --- Queues ---------------------------------------------------------------------------------------


# --- The outbox ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutboxState:
    backlog: int  # rows waiting to be published
    set_aside: int  # rows that cannot be published (their error says why)
    oldest: datetime | None  # when the oldest waiting row was written


def outbox_read() -> OutboxState:
    """Through the ``outbox_pending`` index: only rows not sent yet."""
    pending = OutboxMessage.objects.filter(sent_at__isnull=True)
    counts = pending.aggregate(
        backlog=Count("id", filter=Q(error="")), set_aside=Count("id", filter=~Q(error=""))
    )
    oldest = pending.filter(error="").order_by("id").values_list("created_at", flat=True).first()
    return OutboxState(backlog=counts["backlog"], set_aside=counts["set_aside"], oldest=oldest)


# --- The page -------------------------------------------------------------------------------------


def _age(now: datetime, since: datetime | None) -> float:
    return max((now - since).total_seconds(), 0.0) if since else 0.0


def queue_families(states: dict[str, QueueState], waiting: dict[str, datetime] | None, *,
                   now: datetime) -> list[Metric]:  # fmt: skip
    """``waiting``: app.alerts.oldest_waiting(), None when the database could not be read."""
    length = GaugeMetricFamily(
        "celery_queue_length",
        "Messages ready in the queue (RabbitMQ), dead-letter queues (<queue>.dead) included.",
        labels=QUEUE_LABELS,
    )
    consumers = GaugeMetricFamily(
        "celery_active_consumer_count",
        "Consumers of the queue (RabbitMQ): worker processes or threads' channels serving it.",
        labels=QUEUE_LABELS,
    )
    age = GaugeMetricFamily(
        "jobs_queue_oldest_age_seconds",
        "Work queue: how long its oldest queued tracked job has waited (job records; 0: none). "
        "Dead-letter queue: how long ago its oldest message was dead-lettered (0: empty).",
        labels=QUEUE_LABELS,
    )
    for name, state in states.items():
        length.add_metric([name], state.depth)
        consumers.add_metric([name], state.consumers)
        if name.endswith(queues.DEAD_SUFFIX):
            age.add_metric([name], _age(now, state.head_since))
    if waiting is not None:
        for name in queues.QUEUES:
            age.add_metric([name], _age(now, waiting.get(name)))
    return [length, consumers, age]


def outcome_families(totals: dict[Key, Outcomes]) -> list[Metric]:
    counters = {
        "succeeded": CounterMetricFamily(
            "celery_task_succeeded", "Tracked jobs that succeeded.", labels=TASK_LABELS
        ),
        "failed": CounterMetricFamily(
            "celery_task_failed",
            "Tracked jobs that failed for good: dead-lettered (status dead) or not (failed).",
            labels=TASK_LABELS,
        ),
        "retried": CounterMetricFamily(
            "celery_task_retried",
            "Attempts beyond the first of tracked jobs, counted when the job ends.",
            labels=TASK_LABELS,
        ),
        "cancelled": CounterMetricFamily(
            "celery_task_revoked", "Tracked jobs cancelled (status cancelled).", labels=TASK_LABELS
        ),
    }
    runtime = HistogramMetricFamily(
        "celery_task_runtime",
        "Seconds the last attempt of a tracked job that succeeded took (started to finished).",
        labels=TASK_LABELS,
    )
    for (task_name, queue), outcomes in sorted(totals.items()):
        labels = [task_name, queue]
        for attribute, family in counters.items():
            family.add_metric(labels, getattr(outcomes, attribute))
        buckets = [
            (floatToGoString(bound), outcomes.runtime_buckets.get(repr(bound), 0))
            for bound in RUNTIME_BUCKETS
        ]
        runtime.add_metric(
            labels, [*buckets, ("+Inf", outcomes.runtime_count)], outcomes.runtime_sum
        )
    return [*counters.values(), runtime]


def outbox_families(state: OutboxState, *, now: datetime) -> list[Metric]:
    return [
        GaugeMetricFamily(
            "jobs_outbox_backlog",
            "Outbox rows waiting to be published (the broker was down, or is slow).",
            value=state.backlog,
        ),
        GaugeMetricFamily(
            "jobs_outbox_oldest_age_seconds",
            "How long the oldest waiting outbox row has waited (0: none).",
            value=_age(now, state.oldest),
        ),
        GaugeMetricFamily(
            "jobs_outbox_set_aside",
            "Outbox rows that can never be published as they are (their error column says why).",
            value=state.set_aside,
        ),
    ]


def metrics_collect() -> list[Metric]:
    """Every family, read now. A source that cannot be read (RabbitMQ, the database) leaves its
    families out, logs why and says so in ``jobs_metrics_source_up``: the rest still reports."""
    started = time.monotonic()
    now = timezone.now()
    up = GaugeMetricFamily(
        "jobs_metrics_source_up",
        "Whether this scrape could read the source (broker: RabbitMQ; database: job records).",
        labels=["source"],
    )
    families: list[Metric] = []
    try:
        states = queues_read()
    except BROKER_DOWN as exc:
        logger.warning("metrics: RabbitMQ cannot be read: %s", exc)
        states = {}
        up.add_metric(["broker"], 0)
    else:
        up.add_metric(["broker"], 1)
    try:
        waiting: dict[str, datetime] | None = oldest_waiting()
        families += outcome_families(outcomes_total(now=now))
        families += outbox_families(outbox_read(), now=now)
    except DatabaseError as exc:
        logger.warning("metrics: the database cannot be read: %r", exc)
        waiting = None
        up.add_metric(["database"], 0)
    else:
        up.add_metric(["database"], 1)
    families[:0] = queue_families(states, waiting, now=now)
    took = GaugeMetricFamily(
        "jobs_metrics_scrape_duration_seconds",
        "How long this scrape took to read RabbitMQ and the database.",
        value=time.monotonic() - started,
    )
    return [*families, up, took]


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def metrics_page() -> bytes:
    """The whole page, in Prometheus' text format (``prometheus_client.CONTENT_TYPE_LATEST``)."""
    return generate_latest(_Families(metrics_collect()))
